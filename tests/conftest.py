import pytest
import zmq

from support import Daemon


@pytest.fixture
def zmq_context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def daemon(tmp_path, zmq_context):
    """A running cocained; stopped at the end of the test, which fails if it left a worker behind."""
    d = Daemon(tmp_path, zmq_context).start()
    yield d
    try:
        assert d.stop() == 0, d.log()
    finally:
        d.close()


@pytest.fixture
def make_daemon(tmp_path, zmq_context):
    """Start daemons with extra options (or several sharing one storage)."""
    started = []

    def make(*extra, storage=None):
        d = Daemon(tmp_path / f"d{len(started)}", zmq_context, *extra)
        if storage is not None:
            d.storage = storage
        started.append(d)
        return d

    yield make
    for d in started:
        try:
            d.stop()
        finally:
            d.close()
