"""One writer per folder: an advisory lock on a file in it, held for the life of the process.

A POSIX record lock (``fcntl``), not ``flock``: the kernel releases it when the holding process dies,
however it dies (a SIGKILLed daemon never blocks its restart), and a child process never inherits it.
The holder writes its pid into the file for operators; a refused process asks the kernel who holds
the lock (``F_GETLK``), so the pid it names is right even before the holder has written it.

Record locks belong to the process: a second lock taken in the same process succeeds, and closing
any descriptor of the file drops the lock, so nothing but this class opens it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from cocaine.core.errors import InstanceLocked, StorageError

LOCK_FILE = "cocained.lock"

# struct flock {short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid;} with its
# trailing padding ("0q" aligns the end), as Linux lays it out on 64-bit platforms.
_FLOCK = struct.Struct("hhqqi0q")


class FolderLock:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`InstanceLocked` naming its holder.

        :raises StorageError: the folder or the lock file cannot be made or opened.
        """
        if self._fd is not None:
            return
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StorageError(f"cannot lock {self.path}: {e.strerror}") from e
        try:
            self._take(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException as e:
            os.close(fd)
            if isinstance(e, OSError) and not isinstance(e, StorageError):
                raise StorageError(f"cannot lock {self.path}: {e.strerror}") from e
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays (unlinking it would race)
            self._fd = None

    def _take(self, fd: int) -> None:
        # The holder may die between our failed attempt and our question: then try again.
        for _ in range(3):
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
            pid = _holder(fd)
            if pid != 0:
                raise InstanceLocked(f"{self.path} is locked by {f'pid {pid}' if pid else 'another process'}", pid)
        raise InstanceLocked(f"{self.path} is locked by processes that keep exiting", None)


def _holder(fd: int) -> int | None:
    """The pid that holds a write lock on the file, 0 if none does, None if it is out of sight."""
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    kind, _, _, _, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
    if kind == fcntl.F_UNLCK:
        return 0
    if pid > 0:
        return pid
    # In another pid namespace the kernel cannot name it: fall back on what it wrote.
    try:
        return int(os.pread(fd, 32, 0).decode().strip()) or None
    except ValueError:
        return None
