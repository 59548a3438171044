// What a JavaScript handler receives: one job's request (docs/js.md).
//
//   request.body                        the whole body, a Buffer (throws for a streamed request)
//   await request.read()                the whole body, whole or streamed
//   for await (const chunk of request)  the chunks as they arrive
//   request.meta, request.task, request.id, request.text(), request.json()
'use strict';

// Thrown while reading a streamed request that the engine cancelled (its client gave up) or that
// the worker is stopping; the worker answers the job with the cancel's code and message.
class Aborted extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'Aborted';
    this.code = code;
  }
}

// The input side of one job: chunks that arrived and have not been read yet. Each chunk taken of a
// streamed request is credited to the engine (flow control) through onTaken. Also the credit of
// the job's response: the engine grants it, the worker spends it and waits for it (spend()).
class Inbox {
  constructor(first, closed, onTaken, credit) {
    this.pending = first && first.length ? [first] : [];
    this.closed = closed; // no more chunks will arrive
    this.streamed = !closed;
    this.cancelled = null; // an Aborted once the engine gives up on a streamed request
    this.onTaken = onTaken;
    this.wake = null; // resolves the reader waiting for the next chunk
    this.credit = credit; // bytes of response the handler may still send
    this.wakeWriter = null; // resolves the response waiting for credit
  }

  grant(bytes) {
    this.credit += bytes;
    this.notifyWriter();
  }

  // Before sending a response chunk of `bytes`: wait while the response has no credit left (its
  // client is behind); a chunk may overdraw it. Throws the Aborted once the client is gone.
  async spend(bytes) {
    while (this.credit <= 0 && !this.cancelled) await new Promise((resolve) => { this.wakeWriter = resolve; });
    if (this.cancelled) throw this.cancelled;
    this.credit -= bytes;
  }

  notifyWriter() {
    if (this.wakeWriter) {
      const wake = this.wakeWriter;
      this.wakeWriter = null;
      wake();
    }
  }

  push(chunk) {
    if (this.closed) return;
    this.pending.push(chunk);
    this.notify();
  }

  end() {
    this.closed = true;
    this.notify();
  }

  // A cancel concerns streamed requests, and responses waiting for credit; a whole request
  // otherwise runs and is answered as usual.
  cancel(code, message) {
    if (!this.streamed && this.credit > 0) return;
    this.closed = true;
    this.cancelled = new Aborted(code, message);
    this.pending = [];
    this.notify();
    this.notifyWriter();
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
      if (this.cancelled) throw this.cancelled;
      if (this.pending.length) {
        const chunk = this.pending.shift();
        if (this.streamed) this.onTaken(chunk.length);
        yield chunk;
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
