"""Small file helpers: atomic text files with the usual permissions."""
from __future__ import annotations

import os


def umask() -> int:
    """The process's file-creation mask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> None:
    """Write `text` to `path` atomically (temp, fsync, rename), readable as a file made by open() would be."""
    from .io import _atomic_write

    _atomic_write(os.fspath(path), [text.encode()])


def move_into_place(tmp, path) -> None:
    """Make the finished file `tmp` durable (fsync, the usual mode) and rename it to `path`, durably."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())
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
