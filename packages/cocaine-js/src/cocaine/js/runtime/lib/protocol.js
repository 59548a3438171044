// The engine <-> worker protocol, version 1 (docs/protocol.md): message types, and the frames a
// worker sends. @msgpack/msgpack already encodes like msgpack-python (the smallest integer format,
// Buffers as bin, strings as str), so these frames match tests/vectors/protocol.json byte for byte.
'use strict';

const { Decoder, Encoder } = require('@msgpack/msgpack');

const VERSION = 1;
const HELLO = 1;
const HEARTBEAT = 2;
const TERMINATE = 3;
const INVOKE = 4;
const CHUNK = 5;
const END = 6;
const ERROR = 7;
const LOG = 8;
const CREDIT = 9;
const META = 10;
const OPTIONS = 12;
const GRANT = 13;
const REPLY = 14;
// Bytes of a job's response a worker may send beyond what the engine granted.
const RESPONSE_WINDOW = 256 * 1024;

const encoder = new Encoder();
const decoder = new Decoder();
const encode = (message) => encoder.encode(message);

// A Uint8Array from the decoder, as a Buffer over the same memory.
const asBuffer = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

// A job's end, when the last frame of `out` is that job's chunk [5, job, data]: the chunk becomes a
// reply [14, job, data], the same bytes with another message type, and no end follows. Returns
// whether it did. (Encoder.encode returns a copy, so the frame is the worker's to change.)
function endAsReply(out, job) {
  const last = out[out.length - 1];
  const head = encode([CHUNK, job]); // [0x92, 5, job...]: a chunk's first bytes but its array size
  if (!last || last.length <= head.length || last[0] !== 0x93) return false;
  for (let i = 1; i < head.length; i++) if (last[i] !== head[i]) return false;
  last[1] = REPLY;
  return true;
}

// One frame -> an array whose first element is the message type, or null if it is not one.
function decode(frame) {
  let message;
  try {
    message = decoder.decode(frame);
  } catch {
    return null;
  }
  return Array.isArray(message) && Number.isInteger(message[0]) ? message : null;
}

module.exports = {
  VERSION, HELLO, HEARTBEAT, TERMINATE, INVOKE, CHUNK, END, ERROR, LOG, CREDIT, META, OPTIONS, GRANT, REPLY,
  RESPONSE_WINDOW,
  asBuffer,
  decode,
  endAsReply,
  hello: (pid) => encode([HELLO, VERSION, pid]),
  heartbeat: () => encode([HEARTBEAT]),
  chunk: (job, data) => encode([CHUNK, job, data]),
  end: (job) => encode([END, job]),
  error: (job, code, message) => encode([ERROR, job, code, message]),
  log: (level, message) => encode([LOG, level, message]),
  credit: (job, bytes) => encode([CREDIT, job, bytes]),
  // status first, then the [name, value] pairs: the key order docs/protocol.md gives
  meta: (job, status, headers) => encode([META, job, { status, headers }]),
};
