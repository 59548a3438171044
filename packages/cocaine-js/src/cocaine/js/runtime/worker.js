#!/usr/bin/env node
// The process the engine starts for each worker of a JavaScript app: loads the app module, then
// serves the engine's jobs over the worker protocol (docs/protocol.md) until told to stop.
//
//   node worker.js --endpoint ipc:///... --id W --app A --path /srv/app.js --heartbeat 5
//   node worker.js --endpoint fd:N ...   over a stream link, the inherited descriptor N
//   node worker.js --check      exits 0 when zeromq and @msgpack/msgpack load
//
// Jobs run concurrently: each invoke calls its handler at once, so async handlers overlap, and a
// handler that blocks the event loop blocks heartbeats too (the engine then ends it, as it should).
// So no job ever waits here unstarted behind a long one, and this worker never needs the engine's
// handback offer (in the `options` message, of which it takes up only `reply`).
'use strict';

const { parseArgs } = require('node:util');
const { pathToFileURL } = require('node:url');

// One line the daemon can show when the app is created (npm's packages are not installed).
function need(module) {
  try {
    return require(module);
  } catch (err) {
    process.stderr.write(`${err.message.split('\n')[0]} (run npm ci --omit=dev --ignore-scripts in ${__dirname})\n`);
    return process.exit(2);
  }
}

const protocol = need('./lib/protocol'); // needs @msgpack/msgpack
const { openLink } = require('./lib/link');
const { NotMsgpack } = require('./lib/splitter');
const { Inbox, Request } = require('./lib/request');

const APP_ERROR = 502;
const TIMEOUT = 504;
const UNAVAILABLE = 503;
const LOG_ERROR = 40;
const EXIT_LOAD_FAILED = 3;
const ENGINE_SILENCE_LIMIT = 3; // heartbeat intervals without a word from the engine
const BATCH_DELAY_MS = 1; // how long replies may wait for the rest of a burst

class Worker {
  constructor(link, app, heartbeatMs) {
    this.link = link;
    this.app = app;
    this.heartbeatMs = heartbeatMs;
    this.jobs = new Map(); // running jobs by id: their inboxes
    this.out = []; // frames of the next message
    this.sending = false;
    this.flushScheduled = false;
    this.batchStarted = 0; // when the jobs whose replies are pending began to run
    this.stopping = false;
    this.replies = false; // the engine takes a last chunk and its end as one reply (offered)
    this.lastSent = this.lastHeard = Date.now();
  }

  async serve() {
    this.queue(protocol.hello(process.pid));
    const timer = setInterval(() => this.tick(), Math.max(10, this.heartbeatMs / 4));
    let over;
    try {
      over = await this.link.receive((frames) => {
        this.lastHeard = Date.now();
        this.batchStarted = performance.now();
        for (const frame of frames) this.apply(frame);
        return !this.stopping;
      });
    } catch (err) {
      if (!(err instanceof NotMsgpack)) throw err;
      process.stderr.write(`cocaine-js worker: ${err.message}\n`); // and the link is over
      over = true;
    } finally {
      clearInterval(timer);
    }
    if (over) process.exit(0); // the engine is gone, or gave up on this worker: nobody waits for answers
    for (const inbox of this.jobs.values()) inbox.cancel(UNAVAILABLE, 'the worker is stopping');
    await Promise.allSettled([...this.jobs.values()].map((inbox) => inbox.done));
    await this.flush();
  }

  // Heartbeats go out from the event loop that runs handlers, so a blocked loop makes the worker silent.
  tick() {
    const now = Date.now();
    const parent = process.env.COCAINE_PARENT_PID;
    if (now - this.lastHeard > ENGINE_SILENCE_LIMIT * this.heartbeatMs || (parent && String(process.ppid) !== parent)) {
      process.exit(0); // the engine (or the daemon) is gone: nobody is waiting for our answers
    }
    if (now - this.lastSent >= this.heartbeatMs && !this.out.length) this.queue(protocol.heartbeat());
  }

  // Apply one message from the engine. Unknown types and extra elements are ignored, as the
  // protocol asks, so that it can grow.
  apply(frame) {
    const message = protocol.decode(frame);
    if (!message) {
      process.stderr.write('cocaine-js worker: dropped a bad message from the engine\n');
      return;
    }
    const [kind, id] = message;
    if (kind === protocol.INVOKE) {
      this.invoke(id, message[2], message[3], message[4], message[5]);
    } else if (kind === protocol.CHUNK) {
      const inbox = this.jobs.get(id);
      if (inbox) inbox.push(protocol.asBuffer(message[2]));
    } else if (kind === protocol.END) {
      const inbox = this.jobs.get(id);
      if (inbox) inbox.end();
    } else if (kind === protocol.GRANT) {
      const inbox = this.jobs.get(id);
      if (inbox) inbox.grant(message[2]);
    } else if (kind === protocol.ERROR) {
      const inbox = this.jobs.get(id);
      if (inbox) inbox.cancel(message[2], message[3]);
    } else if (kind === protocol.TERMINATE) {
      this.stopping = true;
    } else if (kind === protocol.OPTIONS) {
      const options = message[1];
      this.replies = options !== null && typeof options === 'object' && options.reply === true;
    }
  }

  invoke(id, task, meta, body, closed) {
    const first = body == null ? Buffer.alloc(0) : protocol.asBuffer(body);
    const inbox = new Inbox(first, closed !== false, (bytes) => this.queue(protocol.credit(id, bytes)),
      protocol.RESPONSE_WINDOW);
    const request = new Request(id, task, meta || {}, inbox.closed ? first : null, inbox);
    this.jobs.set(id, inbox);
    inbox.done = this.run(request, inbox).finally(() => this.jobs.delete(id));
  }

  // A handler that returns at once is answered at once (no await), so the replies to a batch of
  // such jobs leave together, in order.
  async run(request, inbox) {
    const { id, task } = request;
    const { deadline } = request.meta;
    if (typeof deadline === 'number' && Date.now() / 1000 > deadline) {
      this.queue(protocol.error(id, TIMEOUT, 'deadline exceeded before the job started'));
      return;
    }
    const handler = Object.prototype.hasOwnProperty.call(this.app, task) ? this.app[task] : undefined;
    if (typeof handler !== 'function') {
      this.queue(protocol.error(id, APP_ERROR, `the app has no callable '${task}'`));
      return;
    }
    // Replies to a burst of quick jobs leave together; after a slow (synchronous) handler they
    // leave before the next one starts.
    if (this.out.length && performance.now() - this.batchStarted > BATCH_DELAY_MS) {
      this.flush();
      this.batchStarted = performance.now();
    }
    try {
      let result = handler(request);
      if (result && typeof result.then === 'function') result = await result;
      const streaming = this.respond(request, inbox, result);
      if (streaming) await streaming;
      if (!(this.replies && protocol.endAsReply(this.out, id))) this.queue(protocol.end(id));
    } catch (err) {
      // Every job gets exactly one end or error, even a cancelled one: the engine frees its credit.
      if (err === inbox.cancelled) {
        this.queue(protocol.error(id, err.code, err.message));
        return;
      }
      const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      process.stderr.write(`app error in task '${task}' (job ${id}): ${(err && err.stack) || message}\n`);
      this.queue(protocol.error(id, APP_ERROR, message));
    }
  }

  // A handler returns a Buffer or string (one chunk), null/undefined (none), an iterable of chunks
  // or an async iterable (an async generator streams, each chunk sent as it comes), or a Fetch API
  // Response, whose status and headers go first and whose body streams. Returns a promise only
  // when the response streams. A streamed response waits for credit whenever its client is a
  // window behind (docs/protocol.md, "Streamed responses"); other jobs run meanwhile.
  respond(request, inbox, result) {
    if (result == null) return undefined;
    const send = (item) => {
      const bytes = toBytes(item);
      inbox.credit -= bytes.length;
      this.queue(protocol.chunk(request.id, bytes));
    };
    const paced = async (items) => {
      for await (const item of items) {
        const bytes = toBytes(item);
        await inbox.spend(bytes.length);
        this.queue(protocol.chunk(request.id, bytes));
      }
    };
    if (result instanceof Response) {
      this.queue(protocol.meta(request.id, result.status, [...result.headers]));
      if (result.body == null) return undefined;
      return paced(result.body);
    }
    if (typeof result === 'string' || result instanceof Uint8Array) {
      send(result);
    } else if (typeof result[Symbol.asyncIterator] === 'function') {
      return paced(result);
    } else if (typeof result[Symbol.iterator] === 'function') {
      // At once while there is credit (a burst's replies leave together), then paced.
      const items = result[Symbol.iterator]();
      for (;;) {
        if (inbox.credit <= 0) return paced({ [Symbol.iterator]: () => items });
        const { value, done } = items.next();
        if (done) break;
        send(value);
      }
    } else {
      throw new TypeError(`handler returned ${typeName(result)}; expected a Buffer, a string, null or an iterable of them`);
    }
    return undefined;
  }

  // Everything queued in one turn of the event loop leaves as one message.
  queue(frame) {
    this.out.push(frame);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  async flush() {
    this.flushScheduled = false;
    if (this.sending) return; // the running loop below picks the new frames up
    this.sending = true;
    try {
      while (this.out.length) {
        const frames = this.out;
        this.out = [];
        await this.link.send(frames);
        this.lastSent = Date.now();
      }
    } finally {
      this.sending = false;
    }
  }
}

function toBytes(item) {
  if (typeof item === 'string') return Buffer.from(item, 'utf8');
  if (item instanceof Uint8Array) return item;
  throw new TypeError(`handler produced ${typeName(item)}; expected a Buffer or a string`);
}

function typeName(value) {
  if (value === null) return 'null';
  if (typeof value === 'object') return value.constructor ? value.constructor.name : 'object';
  return typeof value;
}

async function loadApp(path) {
  if (path.endsWith('.mjs')) return import(pathToFileURL(path).href);
  return require(path);
}

async function main() {
  const { values } = parseArgs({
    options: {
      check: { type: 'boolean' },
      endpoint: { type: 'string' },
      id: { type: 'string' },
      app: { type: 'string' },
      path: { type: 'string' },
      heartbeat: { type: 'string', default: '5' },
    },
  });
  if (values.check) {
    need('zeromq');
    process.stdout.write('ok\n');
    return 0;
  }
  for (const required of ['endpoint', 'id', 'app', 'path']) {
    if (values[required] === undefined) throw new Error(`--${required} is required`);
  }
  const parent = process.env.COCAINE_PARENT_PID;
  if (parent && String(process.ppid) !== parent) return 1; // the daemon died before we started
  process.on('SIGINT', () => {}); // the daemon decides when its workers stop

  const link = openLink(values.endpoint, values.id);
  let app;
  try {
    app = await loadApp(values.path);
  } catch (err) {
    const reason = `cannot load ${values.path}: ${err instanceof Error ? `${err.name}: ${err.message}` : err}`;
    process.stderr.write(`app ${values.app}: ${(err && err.stack) || reason}\n`);
    await link.send([protocol.log(LOG_ERROR, reason)]);
    link.close();
    return EXIT_LOAD_FAILED;
  }
  await new Worker(link, app, Number(values.heartbeat) * 1000).serve();
  link.close();
  return 0;
}

main().then(
  (status) => { process.exitCode = status; },
  (err) => {
    process.stderr.write(`cocaine-js worker: ${(err && err.stack) || err}\n`);
    process.exit(1); // at once: an open link would keep the process alive, and silent
  },
);
