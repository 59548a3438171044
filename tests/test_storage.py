"""The files storage: where documents live, atomic replacement, clear errors."""

import json
import os

import pytest

from cocaine.core.errors import StorageError
from cocaine.core.storage.files import FilesStorage


@pytest.fixture
def storage(tmp_path):
    return FilesStorage(str(tmp_path), "inst")


def test_layout_and_round_trip(storage, tmp_path):
    assert storage.list("apps") == []
    storage.put("apps", "one", {"a": 1})
    storage.put("apps", "two", {"b": [2]})
    assert json.loads((tmp_path / "inst" / "apps" / "one").read_text()) == {"a": 1}
    assert storage.list("apps") == ["one", "two"]
    assert storage.get("apps", "two") == {"b": [2]}
    storage.remove("apps", "one")
    storage.remove("apps", "one")  # removing twice is fine
    assert storage.list("apps") == ["two"]


def test_replace_is_atomic_and_leaves_no_temporary_files(storage, tmp_path):
    storage.put("apps", "x", {"v": 1})
    inode = os.stat(tmp_path / "inst" / "apps" / "x").st_ino
    storage.put("apps", "x", {"v": 2})
    assert storage.get("apps", "x") == {"v": 2}
    # A rename, not an overwrite in place: readers see the old file or the new one.
    assert os.stat(tmp_path / "inst" / "apps" / "x").st_ino != inode
    assert os.listdir(tmp_path / "inst" / "apps") == ["x"]


def test_errors_name_the_file(storage, tmp_path):
    with pytest.raises(StorageError, match="apps/nope does not exist"):
        storage.get("apps", "nope")
    (tmp_path / "inst" / "apps").mkdir(parents=True)
    (tmp_path / "inst" / "apps" / "bad").write_text("{")
    with pytest.raises(StorageError, match=r"inst/apps/bad is not valid JSON"):
        storage.get("apps", "bad")
    with pytest.raises(StorageError, match="invalid name '../x'"):
        storage.put("apps", "../x", {})


def test_unwritable_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="cannot write"):
        FilesStorage(str(blocker), "inst").put("apps", "x", {})


def test_lock_sweeps_what_killed_writers_left_and_keeps_the_documents(storage, tmp_path):
    storage.put("apps", "kept", {"v": 1})
    leftover = tmp_path / "inst" / "apps" / ".kept.x1y2z3.tmp"
    leftover.write_text('{"v": ')
    storage.lock()
    try:
        assert sorted(os.listdir(tmp_path / "inst" / "apps")) == ["kept"]
        assert (tmp_path / "inst" / "cocained.lock").read_text() == f"{os.getpid()}\n"
    finally:
        storage.unlock()


def test_lock_errors_name_the_lock_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match=f"^cannot lock {blocker}/inst/cocained.lock: Not a directory$"):
        FilesStorage(str(blocker), "inst").lock()
