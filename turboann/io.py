"""One-file index format: written atomically, checked before it is trusted.

Layout (little endian):
    magic      8 bytes   b"TURBOANN"
    version    uint32
    hlen       uint32    length of the header
    header     hlen bytes of UTF-8 JSON: kind, settings, arrays [{name, dtype, shape, offset, nbytes, crc32}]
    hcrc       uint32    CRC-32 of version, hlen and header
    payload    the arrays, each at its 64-byte aligned offset from the file start

`load` checks magic, version, the header checksum, every array's bounds,
dtype, shape and checksum before it builds anything, and raises
`IndexFileError` (a ValueError) naming what is wrong. `load(mmap=True)`
maps the arrays instead of reading them: it checks the header, the array
table and the small arrays the kind names (next_id, list sizes, centres,
centroids), and with verify=True also every other array's checksum; what
the arrays hold is checked by the kind's loader.

This module knows the container only. What each kind of index puts in
it, and what versions 1-3 added, is `turboann.index_file`: an index class
turns itself into (kind, settings, arrays, version) with `_to_file` and
back with the loader it registers for its kind (`register`); `load`
dispatches on the kind the header names.
"""
from __future__ import annotations

import json
import math
import mmap as _mmap
import os
import stat
import struct
import zlib
from typing import Callable, NamedTuple

import numpy as np

from . import _files, _validate

MAGIC = b"TURBOANN"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_ALIGN = 64
_PREFIX = struct.Struct("<8sII")
_DTYPES = {"uint8", "float32", "int64"}
# Real headers take about a kilobyte; the cap bounds what parsing a crafted one costs.
_MAX_HEADER = 1 << 18
_MAX_NDIM = 8


class IndexFileError(ValueError):
    """The file is not a turboann index, or is truncated, corrupt or of another version."""


class ReadOnlyIndexError(ValueError):
    """A write (add, remove, train, set_centroids, or a save over its own file) to an index loaded
    with mmap=True, which is read-only."""


class Stored(NamedTuple):
    """An index file as `load` read it, for the loader of its kind.

    path      the file's path (str), for messages
    kind      the kind the header names
    settings  the header's settings dict
    arrays    name -> array, read, or views of a private map of the file (mapped)
    size      the file's size in bytes; version its format version
    mapped    True for load(mmap=True): the index it becomes is read-only
    full      every array was read and checksummed (not mapped, or verify=True)
    """
    path: str
    kind: str
    settings: dict
    arrays: dict
    size: int
    version: int
    mapped: bool
    full: bool


class _Kind(NamedTuple):
    from_file: Callable[[Stored], object]
    small: frozenset   # arrays a mapped load reads and checks in full however it is asked


_KINDS: dict[str, _Kind] = {}


def register(kind: str, from_file: Callable[[Stored], object], small=frozenset()) -> None:
    """Make `load` build files of `kind` with from_file(stored). small: names of the kind's arrays
    that a mapped load still reads and checksums (copied out of the map) however it is asked."""
    _KINDS[kind] = _Kind(from_file, frozenset(small))


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _crc(data) -> int:
    return zlib.crc32(memoryview(data).cast("B")) & 0xFFFFFFFF


def write_file(path, kind: str, settings: dict, arrays: dict[str, np.ndarray], version: int = VERSION) -> None:
    """Write `arrays` (name -> C-contiguous array) with `settings` under `kind`, as format `version`."""
    path = os.fspath(path)
    arrays = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    entries = []
    for name, a in arrays.items():
        if a.dtype.name not in _DTYPES:
            raise TypeError(f"array {name!r} has dtype {a.dtype}, not one of {sorted(_DTYPES)}")
        entries.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape),
                        "nbytes": int(a.nbytes), "crc32": _crc(a) if a.nbytes else 0})
    offset = 0
    for e in entries:
        e["offset"] = offset
        offset = _aligned(offset + e["nbytes"])
    header = json.dumps({"kind": kind, "settings": settings, "arrays": entries}, sort_keys=True).encode()
    prefix = _PREFIX.pack(MAGIC, version, len(header))
    hcrc = struct.pack("<I", _crc(prefix[8:] + header))
    start = _PREFIX.size + len(header) + 4

    def chunks():
        yield prefix
        yield header
        yield hcrc
        pos = start
        for e, a in zip(entries, arrays.values()):
            at = _aligned(start) + e["offset"]
            yield b"\0" * (at - pos)
            yield memoryview(a).cast("B") if a.nbytes else b""
            pos = at + e["nbytes"]

    _files.atomic_write(path, chunks())


def read_file(path) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Read and verify a file written by `write_file`: (kind, settings, arrays)."""
    return _read(os.fspath(path))[:3]


def _read(path: str, mapped: bool = False, verify: bool = True) -> tuple[str, dict, dict[str, np.ndarray], int, int]:
    """`read_file`, plus the file's size in bytes and format version. mapped: the arrays are views of
    a copy-on-write map of the file (read when touched; writes to them stay private, the file never
    changes); then only the small arrays of the kind (`register`), and with verify all, are checksummed
    (the small ones copied)."""
    f, size = _open_regular(path)
    with f:
        head = f.read(_PREFIX.size)
        if len(head) < _PREFIX.size or head[:8] != MAGIC:
            raise IndexFileError(f"{path!r} is not a turboann index file (bad magic)")
        _, version, hlen = _PREFIX.unpack(head)
        if version not in READABLE_VERSIONS:
            raise IndexFileError(f"{path!r} has format version {version}; this turboann reads versions "
                                 f"{', '.join(map(str, READABLE_VERSIONS))}")
        if hlen > _MAX_HEADER or _PREFIX.size + hlen + 4 > size:
            raise IndexFileError(f"{path!r} is truncated or corrupt (header length {hlen}, file size {size})")
        header = f.read(hlen)
        (hcrc,) = struct.unpack("<I", f.read(4))
        if _crc(head[8:] + header) != hcrc:
            raise IndexFileError(f"{path!r} is corrupt: header checksum mismatch")
        try:
            meta = json.loads(header)
        except (ValueError, RecursionError):   # RecursionError: brackets nested too deep for the parser
            raise IndexFileError(f"{path!r} is corrupt: unreadable header") from None
        if (not isinstance(meta, dict) or not isinstance(meta.get("kind"), str)
                or not isinstance(meta.get("settings"), dict) or not isinstance(meta.get("arrays"), list)):
            raise IndexFileError(f"{path!r} is corrupt: the header is not an object with kind, settings "
                                 f"and arrays")
        data_start = _aligned(_PREFIX.size + hlen + 4)
        entries = _array_entries(path, size, data_start, meta["arrays"])
        if not mapped:
            arrays = {e[0]: _read_array(f, path, *e) for e in entries}
        else:
            # ACCESS_COPY (a private map): NumPy views stay writable, so Numba compiles no read-only
            # variants of the kernels; the index refuses writes itself (ReadOnlyIndexError).
            buf = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY)
            small = _small_arrays(meta["kind"])
            arrays = {e[0]: _map_array(buf, path, *e, check=verify or e[0] in small, copy=e[0] in small)
                      for e in entries}
    return meta["kind"], meta["settings"], arrays, size, version


def _small_arrays(kind: str) -> frozenset:
    """The arrays of `kind` a mapped load checks in full; for a kind nobody registered, those of every
    kind, so that its arrays fail the checks they would fail as any kind before the kind is refused."""
    if kind in _KINDS:
        return _KINDS[kind].small
    return frozenset().union(*(k.small for k in _KINDS.values()))


def _map_array(buf, path: str, name: str, dtype: str, shape: tuple, offset: int, nbytes: int, crc: int,
               check: bool, copy: bool) -> np.ndarray:
    """Array `name` as a view of the mapped file buf (its offset is 64-byte aligned: no copy is
    needed for any kernel); check: its checksum verified; copy (with check): a private copy returned."""
    if not nbytes:
        return np.zeros(shape, dtype)
    a = np.frombuffer(buf, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=offset).reshape(shape)
    if check:
        if _crc(a) != crc:
            raise IndexFileError(f"{path!r} is corrupt: checksum mismatch in array {name!r}")
        if copy:
            return a.copy()
    return a


def _open_regular(path: str):
    """(binary file, size) of the regular file at path; FIFOs, devices and directories are refused.

    Opened non-blocking, so that a FIFO is refused instead of waiting for a
    writer, and checked with fstat on what was opened (no race with a rename).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise IndexFileError(f"cannot open index file {path!r}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise IndexFileError(f"cannot open index file {path!r}: it is {what}")
    return os.fdopen(fd, "rb"), st.st_size


def _is_count(v) -> bool:
    """A JSON integer >= 0 (not a bool, float or string)."""
    return type(v) is int and v >= 0


def _array_entries(path: str, size: int, data_start: int, entries: list) -> list[tuple]:
    """The header's array entries, checked, as (name, dtype, shape, offset, nbytes, crc) tuples.

    Everything that decides how much is read is checked here, before any
    array is: their bytes together must fit in the file, so no header can
    make us read (or allocate) more than the file holds.
    """
    out, names, total = [], set(), 0
    for e in entries:
        fields = [e.get(k) for k in ("name", "dtype", "shape", "offset", "nbytes", "crc32")] \
            if isinstance(e, dict) else None
        if (fields is None or not isinstance(fields[0], str) or not isinstance(fields[1], str)
                or not isinstance(fields[2], list) or len(fields[2]) > _MAX_NDIM
                or not all(_is_count(v) for v in fields[2] + fields[3:])):
            raise IndexFileError(f"{path!r} is corrupt: bad array entry")
        name, dtype, shape, offset, nbytes, crc = fields
        if dtype not in _DTYPES or name in names:
            raise IndexFileError(f"{path!r} is corrupt: array {name!r} has dtype {dtype} or is listed twice")
        if math.prod(shape) * np.dtype(dtype).itemsize != nbytes:   # exact: Python ints do not wrap
            raise IndexFileError(f"{path!r} is corrupt: array {name!r} size does not match its shape")
        if data_start + offset + nbytes > size:
            raise IndexFileError(f"{path!r} is truncated: array {name!r} needs bytes up to "
                                 f"{data_start + offset + nbytes}, file has {size}")
        total += nbytes
        if total > size - data_start:
            raise IndexFileError(f"{path!r} is corrupt: its arrays claim more bytes than the file holds")
        names.add(name)
        out.append((name, dtype, tuple(shape), data_start + offset, nbytes, crc))
    return out


def _read_array(f, path: str, name: str, dtype: str, shape: tuple, offset: int, nbytes: int,
                crc: int) -> np.ndarray:
    f.seek(offset)
    buf = bytearray(nbytes)
    if f.readinto(buf) != nbytes:
        raise IndexFileError(f"{path!r} is truncated while reading array {name!r}")
    if nbytes and _crc(buf) != crc:
        raise IndexFileError(f"{path!r} is corrupt: checksum mismatch in array {name!r}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def save(index, path) -> None:
    """Save an index to `path` atomically: what its `_to_file()` gives, (kind, settings, arrays,
    format version), as one file."""
    write_file(path, *index._to_file())


def load(path, *, mmap: bool = False, verify: bool = False):
    """Load an index saved by `save`; returns an object of the class that was saved.

    Raises `IndexFileError` for anything that is not a file `save` could have
    written: the settings are checked against the arrays and the arrays'
    contents (ids, next_id, centres) before the index is built.

    mmap=True maps codes, factors, ids and kept vectors instead of reading
    them: opening costs the header and the small arrays, memory grows with
    the pages searches touch, and processes mapping one file share its
    pages. The index is read-only: add, remove, train, set_centroids and a
    save over its own file raise `ReadOnlyIndexError` (saving elsewhere
    works); the file is never changed. At open the header, the array table,
    the shapes against the settings and the small arrays are checked;
    verify=True also reads every byte, checking every checksum and what the
    arrays hold, as a normal load always does. Files written before
    version 3 map too, but their fast-scan codes (and IVF fast-scan lists)
    are rebuilt in memory: save them again to map them whole.
    """
    path = os.fspath(path)
    mmap, verify = _validate.flag("mmap", mmap), _validate.flag("verify", verify)
    full = verify or not mmap
    kind, settings, arrays, size, version = _read(path, mapped=bool(mmap), verify=full)
    if kind not in _KINDS:
        raise IndexFileError(f"{path!r} holds an unknown index kind {kind!r}")
    return _KINDS[kind].from_file(Stored(path, kind, settings, arrays, size, version, bool(mmap), bool(full)))
