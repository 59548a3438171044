"""The ``files`` storage: ``<location>/<instance>/<namespace>/<key>``, one JSON document per file.

Crash consistency: a document is written to a temporary file (``.<key>.<random>.tmp``, a name no key
can have), synced, renamed over the old one, and the folder is synced, so a crash at any moment
leaves the old document or the new one, never a mix. Temporary files a crash left behind are swept
once the instance is locked (no other writer can be using them then).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from typing import Any

from cocaine.core.errors import InstanceLocked, StorageError
from cocaine.core.storage import Storage
from cocaine.core.storage.lock import FolderLock

log = logging.getLogger(__name__)

# Keys become file names: no separators, no hidden files, nothing a shell would trip over.
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}$")


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise StorageError(
            f"invalid name {key!r}: use 1-128 letters, digits and _ . @ + -, not starting with . or -"
        )
    return key


class FilesStorage(Storage):
    name = "files"

    def __init__(self, location: str, instance: str) -> None:
        super().__init__(location, instance)
        self._lock = FolderLock(os.path.join(location, instance))

    def lock(self) -> None:
        try:
            self._lock.acquire()
        except InstanceLocked as e:
            holder = f"pid {e.pid}" if e.pid else "another process"
            raise InstanceLocked(f"instance {self.instance!r} in {self.location} is already served by {holder} "
                                 f"(it holds {self._lock.path})", e.pid) from None
        self._sweep_temporary_files()

    def unlock(self) -> None:
        self._lock.release()

    def _sweep_temporary_files(self) -> None:
        root = os.path.join(self.location, self.instance)
        try:
            with os.scandir(root) as namespaces:
                folders = [entry.path for entry in namespaces if entry.is_dir()]
            for folder in folders:
                with os.scandir(folder) as entries:
                    leftovers = [entry.path for entry in entries
                                 if entry.name.startswith(".") and entry.name.endswith(".tmp")]
                for path in leftovers:
                    log.warning("storage: removing %s, left by a write that never finished", path)
                    os.unlink(path)
        except OSError as e:
            raise StorageError(f"cannot sweep {root}: {e.strerror}") from e

    def _dir(self, namespace: str) -> str:
        return os.path.join(self.location, self.instance, namespace)

    def list(self, namespace: str) -> list[str]:
        try:
            names = os.listdir(self._dir(namespace))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f"cannot list {self._dir(namespace)}: {e.strerror}") from e
        return sorted(n for n in names if _KEY.match(n) and not n.endswith(".tmp"))

    def get(self, namespace: str, key: str) -> Any:
        path = os.path.join(self._dir(namespace), check_key(key))
        try:
            with open(path, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            raise StorageError(f"{namespace}/{key} does not exist in {self._dir(namespace)}") from None
        except OSError as e:
            raise StorageError(f"cannot read {path}: {e.strerror}") from e
        except ValueError as e:
            raise StorageError(f"{path} is not valid JSON: {e}") from e

    def put(self, namespace: str, key: str, value: Any) -> None:
        directory = self._dir(namespace)
        path = os.path.join(directory, check_key(key))
        data = json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, exist_ok=True)
                _sync_folder(os.path.dirname(directory))  # the new namespace's own entry
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
            _sync_folder(directory)  # the rename is durable only once the folder is synced
        except OSError as e:
            raise StorageError(f"cannot write {path}: {e.strerror}") from e

    def remove(self, namespace: str, key: str) -> None:
        path = os.path.join(self._dir(namespace), check_key(key))
        try:
            os.unlink(path)
            _sync_folder(os.path.dirname(path))  # else a crash may bring the document back
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"cannot remove {path}: {e.strerror}") from e


def _sync_folder(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
