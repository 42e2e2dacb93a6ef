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

    path = os.fspath(path)
    _atomic_write(path, [text.encode()])
    os.chmod(path, 0o666 & ~umask())   # the temp file behind the rename is created private
