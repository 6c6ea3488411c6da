// Shared by the SDK scripts: where the server is, and printing one JSON result on stdout.
//
// Every script reads REEL_URL and REEL_KEY from the environment, runs one scenario named by
// argv[2] and prints exactly one JSON object on stdout. An error the scenario expects is part
// of that object (see describeError); anything else escapes, and node exits non-zero.

export const BASE_URL = requireEnv('REEL_URL');
export const API_KEY = requireEnv('REEL_KEY');
export const BAD_KEY = 'not-a-key-this-server-issued-0000000000';

function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

export function argument(index, what) {
  const value = process.argv[index];
  if (!value) throw new Error(`missing argument ${index - 1}: ${what}`);
  return value;
}

export function describeError(error) {
  const described = {
    name: error?.name,
    className: error?.constructor?.name,
    message: String(error?.message ?? error),
  };
  for (const key of ['status', 'error', 'taskId', 'resultUrl']) {
    if (error?.[key] !== undefined) described[key] = error[key];
  }
  if (error?.taskDetails !== undefined) described.taskDetails = error.taskDetails;
  return described;
}

// The error a promise rejects with; a promise that resolves instead is a failed expectation.
export async function rejection(promise, what) {
  try {
    const value = await promise;
    return { resolved: true, what, value };
  } catch (error) {
    return describeError(error);
  }
}

export async function main(scenarios) {
  const name = process.argv[2];
  const scenario = scenarios[name];
  if (!scenario) {
    throw new Error(`unknown scenario ${JSON.stringify(name)}; one of ${Object.keys(scenarios).join(', ')}`);
  }
  const result = await scenario();
  process.stdout.write(JSON.stringify(result) + '\n');
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
