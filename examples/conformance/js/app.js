// The conformance app in JavaScript: the tasks every language's app has (../README.md).
'use strict';

exports.echo = (request) => request.body;

exports.chunks = function* () {
  yield 'a';
  yield 'b';
  yield 'c';
};

exports.fail = (request) => {
  throw new Error(`bad input: ${request.body}`);
};

exports.crash = () => process.exit(7); // the worker process dies in the middle of the job

exports.slow = async (request) => {
  // Waits the milliseconds in the body without blocking the event loop, as JavaScript code does.
  await new Promise((resolve) => setTimeout(resolve, Number(request.text())));
  return `slept ${request.text()}`;
};

exports.hang = () => {
  // Blocks the event loop, as a stuck handler would: the heartbeat timeout ends it.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
};

exports.tick = (request) => `tick ${request.meta.tick}`;

exports.upper = async (request) => (await request.read()).toString().toUpperCase();

// Each chunk of a streamed request goes back as a response chunk as soon as it arrives.
exports.stream = async function* (request) {
  for await (const chunk of request) yield chunk;
};

// Answers with response metadata (status 201, two headers: a Fetch API Response) and what the
// request's HTTP metadata says.
exports.respond = (request) => {
  const { method, path, query, headers, peer } = request.meta;
  return new Response(`${method} ${path}?${query} ${headers['x-test']} ${peer}`, {
    status: 201,
    headers: { 'content-type': 'text/plain', 'x-conformance': 'yes' },
  });
};

// Streams as many bytes as the body says (a decimal number) in chunks of 64 KiB, as fast as it can:
// faster than its client reads, so the engine's grants pace it.
exports.flood = async function* (request) {
  const chunk = Buffer.alloc(65536, 'x');
  for (let left = Number((await request.read()).toString()); left > 0; left -= chunk.length) {
    yield left < chunk.length ? chunk.subarray(0, left) : chunk;
  }
};
