"""The ``files`` storage: ``<location>/<instance>/<namespace>/<key>``, one JSON document per file."""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

from cocaine.core.errors import StorageError
from cocaine.core.storage import Storage

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
            os.makedirs(directory, exist_ok=True)
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
            # The rename is durable only once the directory itself is synced.
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise StorageError(f"cannot write {path}: {e.strerror}") from e

    def remove(self, namespace: str, key: str) -> None:
        path = os.path.join(self._dir(namespace), check_key(key))
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"cannot remove {path}: {e.strerror}") from e
