"""JavaScript apps: how handlers are called and what they may return (docs/js.md)."""

import pytest

from runtimes import serve_files

APP = r'''
'use strict';
const helper = require('./helper');

exports.echo = (request) => request.body;
exports.text = (request) => `héllo ${request.text()}`;
exports.nothing = () => null;
exports.asArray = () => ['1', Buffer.from('2')];
exports.generator = function* () { yield 'a'; yield 'b'; };
exports.asyncGenerator = async function* () { yield 'a'; await new Promise((r) => setTimeout(r, 5)); yield 'b'; };
exports.promise = async (request) => `later ${request.text()}`;
exports.json = (request) => JSON.stringify({ task: request.task, meta: request.meta, got: request.json() });
exports.fails = (request) => { throw new RangeError(`bad input: ${request.text()}`); };
exports.rejects = async () => { throw new Error('async failure'); };
exports.throwsString = () => { throw 'a plain string'; };
exports.wrongType = () => 42;
exports.wrongChunk = () => [1.5];
exports.helper = () => helper.greet();
exports.notCallable = 'a string';
'''

HELPER = "exports.greet = () => 'from a module beside the app';\n"

TASKS = ["echo", "text", "nothing", "asArray", "generator", "asyncGenerator", "promise", "json", "fails", "rejects",
         "throwsString", "wrongType", "wrongChunk", "helper", "notCallable", "toString", "missing"]


@pytest.fixture(scope="module")
def call(module_daemon, tmp_path_factory):
    return serve_files(module_daemon, tmp_path_factory.mktemp("js-app"), "js",
                       {"app.js": APP, "helper.js": HELPER}, TASKS)


@pytest.mark.parametrize("task, request_frames, reply", [
    ("echo", [b"hi"], [b"ok", b"hi"]),
    ("text", [b"world"], [b"ok", "héllo world".encode()]),
    ("nothing", [b"x"], [b"ok"]),
    ("asArray", [b""], [b"ok", b"1", b"2"]),
    ("generator", [b""], [b"ok", b"a", b"b"]),
    ("asyncGenerator", [b""], [b"ok", b"a", b"b"]),
    ("promise", [b"x"], [b"ok", b"later x"]),
    ("json", [b"[1]"], [b"ok", b'{"task":"json","meta":{},"got":[1]}']),
    ("fails", [b"zz"], [b"error", b"502", b"RangeError: bad input: zz"]),
    ("rejects", [b""], [b"error", b"502", b"Error: async failure"]),
    ("throwsString", [b""], [b"error", b"502", b"a plain string"]),
    ("wrongType", [b""], [b"error", b"502",
                          b"TypeError: handler returned number; expected a Buffer, a string, null or an iterable of them"]),
    ("wrongChunk", [b""], [b"error", b"502", b"TypeError: handler produced number; expected a Buffer or a string"]),
    ("helper", [b""], [b"ok", b"from a module beside the app"]),
    ("notCallable", [b""], [b"error", b"502", b"the app has no callable 'notCallable'"]),
    ("toString", [b""], [b"error", b"502", b"the app has no callable 'toString'"]),  # inherited: not an export
    ("missing", [b""], [b"error", b"502", b"the app has no callable 'missing'"]),
])
def test_handler_results(call, task, request_frames, reply):
    assert call(task, *request_frames) == reply
