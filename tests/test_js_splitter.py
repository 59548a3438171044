"""The JavaScript worker's stream link splitter (runtime/lib/splitter.js) on Node.js against the shared
vectors: tests/test_worker_protocol.py drives a whole worker over a stream link, whose reads seldom
cut a message; here the reads end anywhere."""

import json
import subprocess

import pytest

from cocaine.js.language import RUNTIME
from runtimes import require_runtime
from vectors import vectors

# Reads the stream (hex) on stdin, feeds it in reads of each size, prints the messages (hex) each
# read size gave, or the error.
SPLIT = r'''
const { MessageSplitter } = require(process.argv[1]);
const [hex, sizes] = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
const stream = Buffer.from(hex, 'hex');
const results = sizes.map((size) => {
  const splitter = new MessageSplitter();
  const messages = [];
  try {
    for (let start = 0; start < stream.length; start += size) {
      messages.push(...splitter.feed(stream.subarray(start, start + size)).map((m) => m.toString('hex')));
    }
  } catch (err) {
    return { messages, error: `${err.name}: ${err.message}` };
  }
  return { messages };
});
process.stdout.write(JSON.stringify(results));
'''


def split(stream: bytes, sizes: list[int]) -> list[dict]:
    require_runtime("js")
    out = subprocess.run(["node", "-e", SPLIT, str(RUNTIME / "lib" / "splitter.js")], check=True, timeout=30,
                         input=json.dumps([stream.hex(), sizes]), capture_output=True, text=True).stdout
    return json.loads(out)


def test_back_to_back_messages_come_out_whole_wherever_the_reads_end():
    # Every vector, and a chunk whose bin spans many reads (16 bit and 32 bit lengths).
    frames = [v.frame for v in vectors().values()]
    frames += [b"\x93\x05\x01\xc5\x01\x00" + b"x" * 256, b"\x93\x05\x02\xc6\x00\x01\x00\x00" + b"y" * 65536]
    stream = b"".join(frames)
    sizes = [1, 2, 3, 7, 64, 4096, len(stream)]
    for size, result in zip(sizes, split(stream, sizes)):
        assert result == {"messages": [f.hex() for f in frames]}, f"reads of {size} bytes"


@pytest.mark.parametrize("size, whole", [(1, 1), (100, 0)])
def test_bytes_that_are_not_msgpack_end_the_stream_naming_where_they_are(size, whole):
    """The messages of earlier reads came out; the read with the bad bytes gives none (the link is
    over, and the worker exits)."""
    end = vectors()["end"].frame
    [result] = split(end + b"\x93\x06\xc1", [size])  # 0xc1: a head byte msgpack never uses
    assert result == {"messages": [end.hex()] * whole,
                      "error": f"NotMsgpack: the stream link carries bytes that are not msgpack (0xc1 at byte {len(end) + 2})"}
