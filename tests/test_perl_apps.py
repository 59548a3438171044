"""Perl apps: how handlers are called and what they may return (docs/perl.md)."""

import pytest

from runtimes import serve_files

APP = r'''
use strict;
use warnings;
use utf8;

sub echo { $_[0]->body }
sub text { "héllo " . $_[0]->body }
sub nothing { undef }
sub as_array { [ "1", "2" ] }
sub streams { my @left = ("a", "b"); sub { shift @left } }
sub request { my ($r) = @_; join ",", $r->task, $r->id =~ /^\d+$/ ? "id" : "no id", scalar keys %{ $r->meta } }
sub dies { die "bad input: " . $_[0]->body . "\n" }
sub dies_with_location { die "no newline" }
sub dies_with_object { die bless { }, "My::Error" }
sub wrong_type { { a => 1 } }
sub wrong_chunk { [ [] ] }
sub helper_module { require Helper; Helper::greet() }
'''

HELPER = "package Helper;\nsub greet { 'from a module beside the app' }\n1;\n"

TASKS = ["echo", "text", "nothing", "as_array", "streams", "request", "dies", "dies_with_location",
         "dies_with_object", "wrong_type", "wrong_chunk", "helper_module", "missing"]


@pytest.fixture(scope="module")
def call(module_daemon, tmp_path_factory):
    return serve_files(module_daemon, tmp_path_factory.mktemp("perl-app"), "perl",
                       {"app.pl": APP, "Helper.pm": HELPER}, TASKS)


@pytest.mark.parametrize("task, request_frames, reply", [
    ("echo", [b"hi"], [b"ok", b"hi"]),
    ("text", [b"world"], [b"ok", "héllo world".encode()]),
    ("nothing", [b"x"], [b"ok"]),
    ("as_array", [b""], [b"ok", b"1", b"2"]),
    ("streams", [b""], [b"ok", b"a", b"b"]),
    ("request", [b""], [b"ok", b"request,id,0"]),
    ("dies", [b"zz"], [b"error", b"502", b"bad input: zz"]),
    ("dies_with_object", [b""], [b"error", b"502"]),
    ("wrong_type", [b""], [b"error", b"502",
                           b"handler returned a HASH reference; expected a string, undef, an ARRAY or a CODE reference"]),
    ("wrong_chunk", [b""], [b"error", b"502", b"handler produced a ARRAY reference; expected a string"]),
    ("helper_module", [b""], [b"ok", b"from a module beside the app"]),
    ("missing", [b""], [b"error", b"502", b"the app has no callable 'missing'"]),
])
def test_handler_results(call, task, request_frames, reply):
    assert call(task, *request_frames)[:len(reply)] == reply


def test_error_messages(call):
    assert call("dies_with_location")[2].startswith(b"no newline at ")
    assert call("dies_with_object")[2].startswith(b"My::Error: My::Error=HASH(")
