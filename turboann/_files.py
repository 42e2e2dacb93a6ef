"""Small file helpers: atomic writes with the usual permissions.

A new file is written under a temp name beside its destination, made
durable (fsync), given the mode open() would have given it and renamed over
the destination, so that a reader sees the old file or the new one, never
half of one. Temp files that killed writers left behind are removed by the
next write to the same path.
"""
from __future__ import annotations

import os
import re
import tempfile
import zlib
from contextlib import contextmanager


def umask() -> int:
    """The process's file-creation mask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path):
    """A temp path beside `path` to write the new file to; on a clean exit it replaces `path`
    (`move_into_place`), on an exception it is removed. Then the temp files of earlier writes to
    path that were killed are removed (see `_remove_stray_temps`)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=directory)
    os.close(fd)
    try:
        yield tmp
        move_into_place(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _remove_stray_temps(path)


def atomic_write(path, chunks) -> None:
    """Write chunks (bytes-like) to `path` atomically (`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)


def write_text(path, text: str) -> None:
    """Write `text` to `path` atomically (temp, fsync, rename), readable as a file made by open() would be."""
    atomic_write(path, [text.encode()])


def move_into_place(tmp, path) -> None:
    """Make the finished file `tmp` durable (fsync, the usual mode) and rename it to `path`, durably."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())   # mkstemp makes it private; the files we write are not
    os.replace(tmp, path)
    fsync_directory(path)


def fsync_directory(path) -> None:
    """Make a rename into path's directory durable (best effort: some filesystems refuse)."""
    try:
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _temp_prefix(path: str) -> str:
    """The temp-file prefix of writes to `path`: ".NAME.tmpPID-", with NAME its file name (shortened,
    with its CRC-32, when long) so that stray temp files can be told apart by path and by process."""
    name = os.path.basename(path)
    if len(name) > 160:   # keep the temp name within NAME_MAX (255)
        name = f"{name[:140]}~{zlib.crc32(name.encode()) & 0xFFFFFFFF:08x}"
    return f".{name}.tmp{os.getpid()}-"


def _remove_stray_temps(path: str) -> None:
    """Remove temp files that earlier writes to `path` left when killed: those of our pattern for this
    path whose process is gone. A live process's temp file may be a write still running: kept."""
    directory = os.path.dirname(os.path.abspath(path))
    stem = _temp_prefix(path)[:-len(f"{os.getpid()}-")]
    pattern = re.compile(re.escape(stem) + r"(\d+)-[a-z0-9_]{8}")
    try:
        names = [n for n in os.listdir(directory) if n.startswith(stem)]
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match and not _process_alive(int(match.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass   # another write removed it first, or it is not ours to remove


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True   # someone else's process, or a pid we cannot check: keep its file
    return True
