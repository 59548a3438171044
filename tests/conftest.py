import pytest
import zmq

from cluster_support import cluster, etcd, network  # noqa: F401 - the cluster tests' fixtures
from support import Daemon, assert_no_reactor_errors


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
        assert_no_reactor_errors(d)
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


@pytest.fixture(scope="session")
def cpp_conformance_app(tmp_path_factory):
    """examples/conformance/cpp built once per session with the documented g++ command."""
    from runtimes import CONFORMANCE, build_cpp_app, require_runtime

    require_runtime("cpp")
    return build_cpp_app(CONFORMANCE / "cpp" / "app.cpp", tmp_path_factory.mktemp("cpp-conformance"))


@pytest.fixture
def conformance_app(request):
    """The manifest ``args`` of the conformance app of the test's ``language`` parameter."""
    from runtimes import APP_FILES, CONFORMANCE, require_runtime

    language = request.getfixturevalue("language")
    require_runtime(language)
    if language == "cpp":
        return str(request.getfixturevalue("cpp_conformance_app"))
    return str(CONFORMANCE / language / APP_FILES[language])


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory):
    """One cocained shared by a module's tests; stopped after them, failing if it left a worker behind."""
    context = zmq.Context()
    d = Daemon(tmp_path_factory.mktemp("daemon"), context).start()
    yield d
    try:
        assert d.stop() == 0, d.log()
        assert_no_reactor_errors(d)
    finally:
        d.close()
        context.destroy(linger=0)


def pytest_collection_modifyitems(config, items):
    """A test parametrized with ``link="stream"`` runs only for languages that have stream links."""
    from runtimes import language_class

    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("link") == "stream" and "language" in params \
                and not language_class(params["language"]).stream_link:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
