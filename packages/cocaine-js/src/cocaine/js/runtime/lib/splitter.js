// Splits the bytes of a stream link (docs/protocol.md, "Stream link") into its protocol messages:
// msgpack values back to back with no framing of their own, cut anywhere by the reads. Each message
// comes out as its own bytes, as a ZeroMQ frame would, for protocol.decode to read.
//
// It walks msgpack's headers and skips their payloads without decoding them. @msgpack/msgpack's
// own stream decoding (decodeStream) yields one value per promise and hides where a value ended
// and which read it came from; the worker applies each read's messages as one batch.
'use strict';

// What follows a head byte from 0xc0 to 0xdf: [kind, size]. FIXED: size more bytes; BYTES: a
// length of size bytes, then that many (plus EXT's type byte); ARRAY and MAP: a count of size bytes.
const BAD = 0;
const FIXED = 1;
const BYTES = 2;
const EXT = 3;
const ARRAY = 4;
const MAP = 5;
const HEADS = [
  [FIXED, 0], [BAD, 0], [FIXED, 0], [FIXED, 0], // 0xc0 nil, 0xc1 never used, 0xc2 false, 0xc3 true
  [BYTES, 1], [BYTES, 2], [BYTES, 4], // bin 8, 16, 32
  [EXT, 1], [EXT, 2], [EXT, 4], // ext 8, 16, 32
  [FIXED, 4], [FIXED, 8], // float 32, 64
  [FIXED, 1], [FIXED, 2], [FIXED, 4], [FIXED, 8], // uint 8, 16, 32, 64
  [FIXED, 1], [FIXED, 2], [FIXED, 4], [FIXED, 8], // int 8, 16, 32, 64
  [FIXED, 2], [FIXED, 3], [FIXED, 5], [FIXED, 9], [FIXED, 17], // fixext 1, 2, 4, 8, 16 (type byte first)
  [BYTES, 1], [BYTES, 2], [BYTES, 4], // str 8, 16, 32
  [ARRAY, 2], [ARRAY, 4], // array 16, 32
  [MAP, 2], [MAP, 4], // map 16, 32
];

class NotMsgpack extends Error {
  constructor(head, at) {
    super(`the stream link carries bytes that are not msgpack (0x${head.toString(16)} at byte ${at})`);
    this.name = 'NotMsgpack';
  }
}

function readLength(bytes, at, size) {
  if (size === 1) return bytes[at];
  if (size === 2) return bytes.readUInt16BE(at);
  return bytes.readUInt32BE(at);
}

// Where the msgpack value that starts at bytes[start] ends. If bytes hold only part of it, a number
// beyond bytes.length: how far the stream must reach before there is more of the value to read
// than a payload's bytes, so a large bin is read once, and a bad head byte is found as soon as it
// arrives. `base` is where bytes[0] is in the stream, for the error.
function valueEnd(bytes, start, base) {
  const size = bytes.length;
  let pos = start;
  let values = 1; // values still to skip: a container adds its elements
  while (values > 0) {
    if (pos >= size) return pos + 1; // the next head byte
    const head = bytes[pos];
    values -= 1;
    if (head < 0x80 || head >= 0xe0) { // positive, negative fixint
      pos += 1;
    } else if (head < 0x90) { // fixmap
      values += 2 * (head & 0x0f);
      pos += 1;
    } else if (head < 0xa0) { // fixarray
      values += head & 0x0f;
      pos += 1;
    } else if (head < 0xc0) { // fixstr
      pos += 1 + (head & 0x1f);
    } else {
      const [kind, width] = HEADS[head - 0xc0];
      if (kind === BAD) throw new NotMsgpack(head, base + pos);
      if (kind === FIXED) {
        pos += 1 + width;
      } else if (pos + 1 + width > size) {
        return pos + 1 + width; // its length is not there yet
      } else {
        const length = readLength(bytes, pos + 1, width);
        pos += 1 + width;
        if (kind === BYTES) pos += length;
        else if (kind === EXT) pos += 1 + length;
        else values += kind === ARRAY ? length : 2 * length;
      }
    }
  }
  return pos;
}

class MessageSplitter {
  constructor() {
    this.tail = []; // the reads that hold the start of a message cut short
    this.tailLength = 0;
    this.needed = 0; // what the tail must reach before the message may be whole
    this.consumed = 0; // bytes of the stream before the tail: where an error is
  }

  // The bytes of one read -> the whole messages they complete, each a Buffer. Throws a NotMsgpack
  // naming the bytes' offset in the stream if they are not msgpack: past them the stream can no
  // longer be split.
  feed(chunk) {
    let bytes = chunk;
    if (this.tailLength) {
      this.tail.push(chunk);
      this.tailLength += chunk.length;
      // A large message arrives in many reads: joined once, when it can be whole.
      if (this.tailLength < this.needed) return [];
      bytes = Buffer.concat(this.tail, this.tailLength);
      this.tail = [];
      this.tailLength = 0;
    }
    const messages = [];
    let start = 0; // of the next message in bytes
    while (start < bytes.length) {
      const end = valueEnd(bytes, start, this.consumed);
      if (end > bytes.length) {
        this.tail = [bytes.subarray(start)];
        this.tailLength = bytes.length - start;
        this.needed = end - start;
        break;
      }
      messages.push(bytes.subarray(start, end));
      start = end;
    }
    this.consumed += start;
    return messages;
  }
}

module.exports = { MessageSplitter, NotMsgpack };
