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
