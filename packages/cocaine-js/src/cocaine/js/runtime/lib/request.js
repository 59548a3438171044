// What a JavaScript handler receives: one job's request (docs/js.md).
//
//   request.body                        the whole body, a Buffer (throws for a streamed request)
//   await request.read()                the whole body, whole or streamed
//   for await (const chunk of request)  the chunks as they arrive
//   request.meta, request.task, request.id, request.text(), request.json()
'use strict';

// Thrown while reading a request the engine cancelled (or when the worker stops); the worker then
// sends nothing more for the job.
class Aborted extends Error {
  constructor() {
    super('the job was cancelled');
    this.name = 'Aborted';
  }
}

// The input side of one job: chunks that arrived and have not been read yet.
class Inbox {
  constructor(first, closed) {
    this.pending = first && first.length ? [first] : [];
    this.closed = closed; // no more chunks will arrive
    this.cancelled = false;
    this.wake = null; // resolves the reader waiting for the next chunk
  }

  push(chunk) {
    if (this.closed) return;
    this.pending.push(chunk);
    this.notify();
  }

  close(cancelled) {
    this.closed = true;
    this.cancelled = this.cancelled || cancelled;
    this.notify();
  }

  notify() {
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
  }

  async *chunks() {
    for (;;) {
      if (this.cancelled) throw new Aborted();
      if (this.pending.length) {
        yield this.pending.shift();
      } else if (this.closed) {
        return;
      } else {
        await new Promise((resolve) => { this.wake = resolve; });
      }
    }
  }
}

class Request {
  constructor(id, task, meta, body, inbox) {
    this.id = id;
    this.task = task;
    this.meta = meta;
    this._body = body; // null for a streamed request
    this._inbox = inbox;
  }

  get body() {
    if (this._body === null) {
      throw new Error('this request is streamed: read it with await request.read() or for await (const chunk of request)');
    }
    return this._body;
  }

  text(encoding = 'utf8') {
    return this.body.toString(encoding);
  }

  json() {
    return JSON.parse(this.text());
  }

  async read() {
    const parts = [];
    for await (const chunk of this) parts.push(chunk);
    return Buffer.concat(parts);
  }

  [Symbol.asyncIterator]() {
    return this._inbox.chunks();
  }
}

module.exports = { Aborted, Inbox, Request };
