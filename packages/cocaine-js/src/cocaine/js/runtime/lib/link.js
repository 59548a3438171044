// The worker's end of its link to the engine (docs/protocol.md, "Transport"): a ZeroMQ DEALER
// connected to the pool's ROUTER (--endpoint ipc://...), or a stream link, a Unix stream socket
// the worker inherited (--endpoint fd:N). A worker with a stream link never loads zeromq: no
// ZeroMQ I/O thread, less memory, and none of the 11-22 ms loading it takes at the start.
//
// Both have one interface: receive(onBatch) hands each batch of protocol messages (one message per
// Buffer, as ZeroMQ frames) to onBatch until it returns false; send(frames) sends a batch at once.
'use strict';

const net = require('node:net');
const { MessageSplitter } = require('./splitter');

function openLink(endpoint, workerId) {
  if (endpoint.startsWith('fd:')) {
    if (!/^fd:\d+$/.test(endpoint)) throw new Error(`--endpoint ${endpoint}: fd:N needs a descriptor number`);
    return new StreamLink(Number(endpoint.slice(3)));
  }
  return new ZeroMQLink(endpoint, workerId);
}

class ZeroMQLink {
  constructor(endpoint, workerId) {
    const zmq = require('zeromq'); // here: a worker with a stream link never loads it
    // The linger lets the last replies (or a load failure's log message) leave before the exit.
    this.sock = new zmq.Dealer({ routingId: workerId, linger: 1000 });
    this.sock.connect(endpoint);
  }

  // Resolves to false once onBatch returned false. Over ZeroMQ the engine's absence shows only as
  // silence: the link ends only if the socket is closed.
  async receive(onBatch) {
    for await (const frames of this.sock) {
      if (onBatch(frames) === false) return false;
    }
    return true;
  }

  // A promise: zeromq takes one send at a time.
  send(frames) {
    return this.sock.send(frames);
  }

  close() {
    this.sock.close();
  }
}

class StreamLink {
  constructor(fd) {
    this.socket = new net.Socket({ fd, readable: true, writable: true });
    this.splitter = new MessageSplitter();
    // A failed write (the engine closed its end) ends the link for receive; it must not throw.
    this.socket.on('error', () => {});
  }

  // Resolves to false once onBatch returned false, to true when the link is over: its end of
  // stream means the engine is gone or gave up on this worker. Rejects with a NotMsgpack if the
  // engine sent bytes that are not msgpack, or with what onBatch threw, as the ZeroMQ link does.
  // Each read's messages are one batch, handed over from the read's own callback.
  receive(onBatch) {
    const { socket, splitter } = this;
    return new Promise((resolve, reject) => {
      const finish = (settle, value) => {
        socket.off('data', onData);
        socket.off('end', onOver);
        socket.off('close', onOver);
        settle(value);
      };
      const onOver = () => finish(resolve, true);
      const onData = (bytes) => {
        try {
          const messages = splitter.feed(bytes);
          if (messages.length && onBatch(messages) === false) finish(resolve, false);
        } catch (err) {
          finish(reject, err);
        }
      };
      socket.on('data', onData);
      socket.on('end', onOver);
      socket.on('close', onOver); // after an error, or if it came before receive
      if (socket.destroyed) onOver();
    });
  }

  // The batch leaves in one write. The kernel takes it at once unless the engine lags: the promise
  // then waits until the socket drains, so the worker does not pile up what the engine cannot read.
  send(frames) {
    const { socket } = this;
    if (socket.write(frames.length === 1 ? frames[0] : Buffer.concat(frames))) return undefined;
    return new Promise((resolve) => {
      const done = () => {
        socket.off('drain', done);
        socket.off('close', done);
        resolve();
      };
      socket.on('drain', done);
      socket.on('close', done);
    });
  }

  // What was written leaves first; then the socket closes, and with it the last handle keeping
  // the process alive.
  close() {
    this.socket.end(() => this.socket.destroy());
  }
}

module.exports = { openLink };
