// The npm `wavespeed` SDK (0.3.2, unmodified) against a live Reel: node wavespeed.mjs SCENARIO [ARGS].
import { readFileSync } from 'node:fs';

import { Client, WavespeedPredictionException } from 'wavespeed';

import { API_KEY, BAD_KEY, BASE_URL, argument, main, rejection } from './common.mjs';

const MODEL = 'runwayml/gen4-turbo';
// Seconds. Polls are cheap for Reel; the SDK's default is one a second.
const FAST = { pollInterval: 0.1, timeout: 120 };

// No connection retries: a server that misbehaves must show up as an error, not a delay.
const client = (key = API_KEY) => new Client(key, { baseUrl: BASE_URL, maxConnectionRetries: 0 });

const base64Of = (path) => readFileSync(path).toString('base64');

await main({
  // run() with a bare base64 image: one MP4 URL.
  async run() {
    const image = base64Of(argument(3, 'PNG path'));
    return client().run(MODEL, { prompt: 'a slow push-in', image, aspect_ratio: '1:1' }, FAST);
  },

  // upload() of a local file (ticket, then PUT), then run() on the download_url it returns.
  async upload() {
    const downloadUrl = await client().upload(argument(3, 'PNG path'));
    const result = await client().run(MODEL, { prompt: 'from an upload', image: downloadUrl }, FAST);
    return { downloadUrl, ...result };
  },

  // A key the server never issued: submit and upload both fail with the HTTP status in the message.
  async 'bad-key'() {
    const image = base64Of(argument(3, 'PNG path'));
    const bad = client(BAD_KEY);
    return {
      run: await rejection(bad.run(MODEL, { prompt: 'x', image, aspect_ratio: '1:1' }, FAST), 'run'),
      upload: await rejection(bad.upload(argument(3, 'PNG path')), 'upload'),
    };
  },

  // A prediction that fails: run() rejects with the server's error text, runNoThrow() reports it.
  async fail() {
    const image = base64Of(argument(3, 'PNG path'));
    const input = { prompt: 'falls over [sandbox:fail]', image, aspect_ratio: '1:1' };
    const run = await rejection(client().run(MODEL, input, FAST), 'run');
    const noThrow = await client().runNoThrow(MODEL, input, FAST);
    const error = noThrow.detail.error;
    return {
      run,
      runNoThrow: {
        outputs: noThrow.outputs,
        status: noThrow.detail.status,
        taskId: noThrow.detail.taskId,
        isPredictionException: error instanceof WavespeedPredictionException,
        message: error?.message,
      },
    };
  },

  // enableSyncMode: one POST held open until the prediction ends, outputs in its answer.
  async sync() {
    const image = base64Of(argument(3, 'PNG path'));
    return client().run(MODEL, { prompt: 'in one request', image, aspect_ratio: '1:1' }, {
      enableSyncMode: true,
      timeout: 120,
    });
  },
});
