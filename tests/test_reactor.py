"""The engine's reactor (cocaine.core.engine.reactor): what a poll round delivers."""

import os

from cocaine.core.engine.reactor import Reactor


def test_a_descriptor_number_reused_within_a_round_gets_none_of_that_rounds_events():
    # Two readable pipes, polled in one round: the first one's handler closes the second and puts a
    # new, empty pipe on its number (as a worker's exit descriptor may take its answer socket's).
    reactor = Reactor()
    first_r, first_w = os.pipe()
    second_r, second_w = os.pipe()
    os.write(first_w, b"x")
    os.write(second_w, b"x")
    calls = []

    def on_first():
        calls.append("first")
        os.read(first_r, 1)
        reactor.remove_reader(second_r)
        new_r, new_w = os.pipe()
        os.dup2(new_r, second_r)  # the same number, now an empty pipe's
        os.close(new_r)
        calls.append(new_w)
        reactor.add_reader(second_r, lambda: calls.append("new pipe read"))
        reactor.stop()

    reactor.add_reader(first_r, on_first)
    reactor.add_reader(second_r, lambda: calls.append("old pipe read"))
    try:
        reactor.run()
        # The round's event for that number was the old pipe's: the new pipe, empty, was not called.
        assert calls[0] == "first" and "new pipe read" not in calls and "old pipe read" not in calls
    finally:
        for fd in (first_r, first_w, second_r, second_w, *calls[1:2]):
            os.close(fd)
        reactor.close()
