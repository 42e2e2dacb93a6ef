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
`IndexFileError` (a ValueError) naming what is wrong.

Versions: 1 holds a flat `Index`; 2 adds the kind "IVFIndex" (arrays
centroids, list_sizes) and kept vectors (array vectors, row i for ids[i]).
A file is written with the lowest version that can hold it, so flat indexes
without kept vectors stay readable by version-1 readers.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib

import numpy as np

from . import _files

MAGIC = b"TURBOANN"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_ALIGN = 64
_PREFIX = struct.Struct("<8sII")
_DTYPES = {"uint8", "float32", "int64"}
_MAX_HEADER = 1 << 24


class IndexFileError(ValueError):
    """The file is not a turboann index, or is truncated, corrupt or of another version."""


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _crc(data) -> int:
    return zlib.crc32(memoryview(data).cast("B")) & 0xFFFFFFFF


def _atomic_write(path: str, chunks) -> None:
    """Write chunks (bytes-like) to a temp file beside path, fsync, rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".turboann", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_files.umask())   # mkstemp makes it private; a saved index is not
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _files.fsync_directory(path)


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

    _atomic_write(path, chunks())


def read_file(path) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Read and verify a file written by `write_file`: (kind, settings, arrays)."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as e:
        raise IndexFileError(f"cannot open index file {path!r}: {e.strerror}") from None
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
            kind, settings, entries = meta["kind"], meta["settings"], meta["arrays"]
        except (ValueError, KeyError, TypeError):
            raise IndexFileError(f"{path!r} is corrupt: unreadable header") from None
        data_start = _aligned(_PREFIX.size + hlen + 4)
        arrays = {}
        for e in entries:
            arrays[e["name"]] = _read_array(f, path, size, data_start, e)
    return kind, settings, arrays


def _read_array(f, path: str, size: int, data_start: int, e: dict) -> np.ndarray:
    try:
        name, dtype, shape = str(e["name"]), str(e["dtype"]), tuple(int(s) for s in e["shape"])
        offset, nbytes, crc = data_start + int(e["offset"]), int(e["nbytes"]), int(e["crc32"])
    except (KeyError, TypeError, ValueError):
        raise IndexFileError(f"{path!r} is corrupt: bad array entry") from None
    if dtype not in _DTYPES or any(s < 0 for s in shape):
        raise IndexFileError(f"{path!r} is corrupt: array {name!r} has dtype {dtype} shape {shape}")
    if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != nbytes:
        raise IndexFileError(f"{path!r} is corrupt: array {name!r} size does not match its shape")
    if offset < data_start or offset + nbytes > size:
        raise IndexFileError(f"{path!r} is truncated: array {name!r} needs bytes up to {offset + nbytes}, "
                             f"file has {size}")
    f.seek(offset)
    buf = bytearray(nbytes)
    if f.readinto(buf) != nbytes:
        raise IndexFileError(f"{path!r} is truncated while reading array {name!r}")
    if nbytes and _crc(buf) != crc:
        raise IndexFileError(f"{path!r} is corrupt: checksum mismatch in array {name!r}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def save(index, path) -> None:
    """Save an Index or IVFIndex to `path` atomically."""
    from .ivf import IVFIndex
    version = 1
    if isinstance(index, IVFIndex):
        codes, factors, ids, sizes = index._store.export()
        arrays = {"codes": codes, "factors": factors, "ids": ids, "list_sizes": sizes}
        if index._centroids is not None:
            arrays["centroids"] = index._centroids
        version = 2
    else:
        ids = index._store.ids
        arrays = {"codes": index._store.codes, "factors": index._store.stored_factors, "ids": ids}
    arrays["next_id"] = np.array([index._store.next_id], np.int64)
    if index._mean is not None:
        # "mean" translates (l2); a mean direction is saved under its own name so
        # files from before directions were centred this way cannot be misread.
        arrays["mean" if index.metric == "l2" else "mean_direction"] = index._mean
    if index._vectors is not None:
        arrays["vectors"] = index._vectors.vectors[index._vectors.rows(ids)]
        version = 2
    write_file(path, type(index).__name__, index._settings(), arrays, version)


def load(path):
    """Load an index saved by `save`; returns an object of the class that was saved."""
    from .index import Index
    from .ivf import IVFIndex
    kind, settings, arrays = read_file(path)
    classes = {"Index": Index, "IVFIndex": IVFIndex}
    if kind not in classes:
        raise IndexFileError(f"{os.fspath(path)!r} holds an unknown index kind {kind!r}")
    if settings.get("rotation") == "hadamard" and "rotation_rounds" not in settings:
        settings["rotation_rounds"] = 3   # files from before the round count depended on dim
    try:
        index = classes[kind](**{k: v for k, v in settings.items()})
    except (TypeError, ValueError) as e:
        raise IndexFileError(f"{os.fspath(path)!r} has invalid settings: {e}") from None
    need = ("codes", "factors", "ids", "next_id")
    missing = [name for name in need if name not in arrays]
    store = index._store
    codes, factors, ids = arrays.get("codes"), arrays.get("factors"), arrays.get("ids")
    factor_cols, factor_dtype = store.factor_layout()
    if (missing or codes.ndim != 2 or codes.shape[1] != store.code_bytes or factors.ndim != 2
            or factors.shape != (codes.shape[0], factor_cols) or ids.shape != (codes.shape[0],)
            or codes.dtype != np.uint8 or factors.dtype != factor_dtype or ids.dtype != np.int64):
        raise IndexFileError(f"{os.fspath(path)!r} is corrupt: arrays do not match the settings")
    centre_name = "mean" if index.metric == "l2" else "mean_direction"
    if index.metric != "l2" and "mean" in arrays:
        raise IndexFileError(f"{os.fspath(path)!r} was centred by an earlier turboann rule that this "
                             f"version does not read; rebuild the index")
    if centre_name in arrays:
        if arrays[centre_name].shape != (index.dim,) or arrays[centre_name].dtype != np.float32:
            raise IndexFileError(f"{os.fspath(path)!r} is corrupt: bad mean vector")
        index._set_mean(arrays[centre_name])
    if len(np.unique(ids)) != len(ids):
        raise IndexFileError(f"{os.fspath(path)!r} is corrupt: duplicate ids")
    next_id = int(arrays["next_id"][0])
    if kind == "IVFIndex":
        _load_lists(index, arrays, codes, factors, ids, next_id, os.fspath(path))
    else:
        store.load_arrays(codes, factors, ids, next_id)
    if index._vectors is not None:
        vectors = arrays.get("vectors")
        if vectors is None or vectors.shape != (len(ids), index.dim) or vectors.dtype != np.float32:
            raise IndexFileError(f"{os.fspath(path)!r} is corrupt: the kept vectors are missing or "
                                 f"do not match the ids")
        index._vectors.load(vectors.copy(), ids.copy())
    return index


def _load_lists(index, arrays, codes, factors, ids, next_id: int, path: str) -> None:
    """Check and install an IVFIndex's centroids and inverted lists."""
    sizes, centroids = arrays.get("list_sizes"), arrays.get("centroids")
    if (sizes is None or sizes.shape != (index.nlist,) or sizes.dtype != np.int64 or (sizes < 0).any()
            or int(sizes.sum()) != len(ids)):
        raise IndexFileError(f"{path!r} is corrupt: list sizes do not match the {len(ids)} vectors")
    if centroids is None:
        if len(ids):
            raise IndexFileError(f"{path!r} is corrupt: vectors without coarse centroids")
    elif (centroids.shape != (index.nlist, index.dim) or centroids.dtype != np.float32
          or not np.isfinite(centroids).all()):
        raise IndexFileError(f"{path!r} is corrupt: bad coarse centroids")
    else:
        index._set_centroids(centroids)
    index._store.load(codes, factors, ids, sizes, next_id)
