"""Positional file I/O and directory locking with fallbacks for platforms that lack
``os.pread``/``os.pwrite`` (Windows) or ``fcntl`` (Windows)."""

from __future__ import annotations

import errno
import os
import sys
import threading

from tidelog.errors import StorageError

_seek_lock = threading.Lock()


def pread(fd: int, n: int, pos: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, pos)
    with _seek_lock:  # seek + read must not interleave with another thread's
        os.lseek(fd, pos, os.SEEK_SET)
        return os.read(fd, n)


def pwrite(fd: int, data: memoryview | bytes, pos: int) -> int:
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, pos)
    with _seek_lock:
        os.lseek(fd, pos, os.SEEK_SET)
        return os.write(fd, data)


def allocate(fd: int, offset: int, length: int) -> None:
    """Reserves disk blocks for ``[offset, offset + length)``, growing the file, so that later
    writes through a memory map cannot fail (a full disk is then this call's ENOSPC, not a
    SIGBUS at the first touch of a sparse page). posix_fallocate where the platform and the
    filesystem have it, else zeros written."""
    if length <= 0:
        return
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, offset, length)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    zeros = bytes(min(length, 1 << 16))
    end = offset + length
    while offset < end:
        offset += pwrite(fd, zeros[: end - offset], offset)


def datasync(fd: int) -> None:
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def try_lock(fd: int) -> bool:
    """Takes an exclusive, non-blocking lock on an open file; False if another holder has it."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def storage_error(operation: str, path: str, e: OSError) -> StorageError:
    return StorageError(
        f"{operation} {path} failed: {e.strerror or e}", operation=operation, path=path, errno=e.errno
    )


def sync_dir(directory: str) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise storage_error("fsync directory", directory, e) from e


def write_file_atomic(directory: str, name: str, contents: bytes) -> None:
    """Writes ``directory/name`` atomically and durably: temp file, fsync, rename, fsync dir."""
    tmp = os.path.join(directory, name + ".tmp")
    dst = os.path.join(directory, name)
    try:
        with open(tmp, "wb") as f:
            f.write(contents)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except OSError as e:
        raise storage_error("write", dst, e) from e
    sync_dir(directory)
