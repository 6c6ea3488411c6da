// The npm `@runwayml/sdk` (4.20.1, unmodified) against a live Reel: node runway.mjs SCENARIO [ARGS].
//
// waitForTaskOutput() sleeps 6 ± 1.5 s before each poll (POLL_TIME is a constant inside the
// SDK, not an option), so only the scenarios that need it call it, once each.
import { createReadStream, readFileSync } from 'node:fs';
import { basename } from 'node:path';

import RunwayML, { NotFoundError } from '@runwayml/sdk';

import { API_KEY, BAD_KEY, BASE_URL, argument, main, rejection, sleep } from './common.mjs';

const WAIT = { timeout: 120_000 };

// No retries: a 5xx or 429 must surface, not be papered over.
const client = (apiKey = API_KEY) => new RunwayML({ apiKey, baseURL: BASE_URL, maxRetries: 0 });

const dataUri = (path) => `data:image/png;base64,${readFileSync(path).toString('base64')}`;

async function waitUntilRunning(runway, id, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const task = await runway.tasks.retrieve(id);
    if (task.status === 'RUNNING') return task;
    if (task.status !== 'PENDING' && task.status !== 'THROTTLED') {
      throw new Error(`task ${id} went ${task.status} before it ran: ${JSON.stringify(task)}`);
    }
    if (Date.now() > deadline) throw new Error(`task ${id} never started: ${JSON.stringify(task)}`);
    await sleep(100);
  }
}

await main({
  // create() with a data URI, then waitForTaskOutput(): SUCCEEDED with one URL.
  async 'create-wait'() {
    const created = client().imageToVideo.create({
      model: 'gen4_turbo',
      promptImage: dataUri(argument(3, 'PNG path')),
      promptText: 'a slow push-in',
      ratio: '1280:720',
      duration: 2,
    });
    const { id } = await created;
    const task = await created.waitForTaskOutput(WAIT);
    return { createdId: id, task };
  },

  // tasks.delete() on a finished task: 204, then retrieve() and delete() are 404.
  async delete() {
    const id = argument(3, 'task id');
    const runway = client();
    const deleted = await runway.tasks.delete(id);
    return {
      deleted: deleted ?? null,
      retrieve: await rejection(runway.tasks.retrieve(id), 'retrieve'),
      deleteAgain: await rejection(runway.tasks.delete(id), 'delete again'),
      retrieveIsNotFound: (await runway.tasks.retrieve(id).catch((e) => e)) instanceof NotFoundError,
    };
  },

  async 'bad-ratio'() {
    return rejection(
      client().imageToVideo.create({
        model: 'gen4_turbo',
        promptImage: dataUri(argument(3, 'PNG path')),
        ratio: '1:1',
      }),
      'create',
    );
  },

  async 'bad-key'() {
    const bad = client(BAD_KEY);
    return {
      create: await rejection(
        bad.imageToVideo.create({
          model: 'gen4_turbo',
          promptImage: dataUri(argument(3, 'PNG path')),
          ratio: '960:960',
        }),
        'create',
      ),
      retrieve: await rejection(bad.tasks.retrieve('00000000-0000-4000-8000-000000000000'), 'retrieve'),
    };
  },

  // A generation that fails: waitForTaskOutput() rejects with TaskFailedError and the FAILED task.
  async fail() {
    const created = client().imageToVideo.create({
      model: 'gen4_turbo',
      promptImage: dataUri(argument(3, 'PNG path')),
      promptText: 'falls over [sandbox:fail]',
      ratio: '960:960',
      duration: 2,
    });
    return rejection(created.waitForTaskOutput(WAIT), 'waitForTaskOutput');
  },

  // tasks.delete() while RUNNING cancels; retrieve() shows CANCELLED, a second delete deletes.
  async cancel() {
    const runway = client();
    const { id } = await runway.imageToVideo.create({
      model: 'gen4_turbo',
      promptImage: dataUri(argument(3, 'PNG path')),
      promptText: 'a long one [sandbox:delay=30]',
      ratio: '960:960',
      duration: 2,
    });
    const running = await waitUntilRunning(runway, id);
    await runway.tasks.delete(id);
    const cancelled = await runway.tasks.retrieve(id);
    // retrieve() skips the initial sleep, so this polls once and sees CANCELLED at once.
    const waited = await rejection(runway.tasks.retrieve(id).waitForTaskOutput(WAIT), 'waitForTaskOutput');
    await runway.tasks.delete(id);
    const afterDelete = await rejection(runway.tasks.retrieve(id), 'retrieve after delete');
    return { id, running, cancelled, waited, afterDelete };
  },

  // uploads.createEphemeral() of a file stream and of a File (a Blob): runway:// URIs that create()
  // accepts; the stream's is generated to the end.
  async upload() {
    const path = argument(3, 'PNG path');
    const runway = client();
    const fromStream = await runway.uploads.createEphemeral({ file: createReadStream(path) });
    const file = new File([readFileSync(path)], `blob-${basename(path)}`, { type: 'image/png' });
    const fromBlob = await runway.uploads.createEphemeral({ file });

    // The Blob's upload only has to be accepted: create, then cancel and delete at once.
    const blobTask = await runway.imageToVideo.create({
      model: 'gen4_turbo',
      promptImage: [{ uri: fromBlob.uri, position: 'first' }],
      promptText: 'never mind [sandbox:delay=30]',
      ratio: '960:960',
      duration: 2,
    });
    await runway.tasks.delete(blobTask.id);
    await runway.tasks.delete(blobTask.id);

    const created = runway.imageToVideo.create({
      model: 'gen4_turbo',
      promptImage: fromStream.uri,
      ratio: '960:960',
      duration: 2,
    });
    const task = await created.waitForTaskOutput(WAIT);
    return { streamUri: fromStream.uri, blobUri: fromBlob.uri, blobTaskId: blobTask.id, task };
  },
});
