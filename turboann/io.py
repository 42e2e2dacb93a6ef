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
table and the small arrays (next_id, list sizes, centres, centroids), and
with verify=True also every other array's checksum and contents.

Versions: 1 holds a flat `Index`; 2 adds the kind "IVFIndex" (arrays
centroids, list_sizes) and kept vectors (array vectors, row i for ids[i]).
3 holds fast-scan codes as the search reads them, so that a mapped file
needs no copy: a flat index's "blocks" and "split_factors" (instead of
row-major "codes"), an IVF index's arena ("arena_blocks", "arena_factors",
"arena_ids", "split_factors": list l from the sum of the whole 32-vector
blocks of the lists before it, id -1 in the padding; kept vectors in list
order). A file is written with the lowest version that can hold it, so
row-major flat indexes without kept vectors stay readable by version-1
readers.
"""
from __future__ import annotations

import json
import math
import mmap as _mmap
import os
import stat
import struct
import zlib

import numpy as np

from . import _files

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


# Arrays a mapped load reads and checks in full however it is asked: small, and the structure
# (list sizes, next id) or the scores (centres, centroids) depend on them.
_ALWAYS_CHECKED = {"next_id", "list_sizes", "centroids", "mean", "mean_direction"}


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
    changes); then only those in `_ALWAYS_CHECKED`, and with verify all, are checksummed (and copied)."""
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
            arrays = {e[0]: _map_array(buf, path, *e, check=verify or e[0] in _ALWAYS_CHECKED) for e in entries}
    return meta["kind"], meta["settings"], arrays, size, version


def _map_array(buf, path: str, name: str, dtype: str, shape: tuple, offset: int, nbytes: int, crc: int,
               check: bool) -> np.ndarray:
    """Array `name` as a view of the mapped file buf (its offset is 64-byte aligned: no copy is
    needed for any kernel); check: its checksum verified, and a private copy returned."""
    if not nbytes:
        return np.zeros(shape, dtype)
    a = np.frombuffer(buf, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=offset).reshape(shape)
    if check:
        if _crc(a) != crc:
            raise IndexFileError(f"{path!r} is corrupt: checksum mismatch in array {name!r}")
        if name in _ALWAYS_CHECKED:
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
    """Save an Index or IVFIndex to `path` atomically, fast-scan codes as the search reads them
    (version 3), so that `load(mmap=True)` maps them as they are."""
    from .ivf import IVFIndex
    from .kernels import fastscan as _fs
    version = 1
    store = index._store
    if isinstance(index, IVFIndex):
        if index.layout == "fastscan":
            blocks, factors, arena_ids = store.export_arena()
            arrays = {"arena_blocks": blocks, "arena_factors": factors, "arena_ids": arena_ids,
                      "split_factors": _fs.split_factors(factors, factors.shape[0]), "list_sizes": store.size.copy()}
            ids = arena_ids[arena_ids >= 0]
            version = 3
        else:
            codes, factors, ids, sizes = store.export()
            arrays = {"codes": codes, "factors": factors, "ids": ids, "list_sizes": sizes}
            version = 2
        if index._centroids is not None:
            arrays["centroids"] = index._centroids
    elif index.layout == "fastscan":
        ids = store.ids
        arrays = {"blocks": store.blocks, "split_factors": store.split_factors(), "factors": store.stored_factors,
                  "ids": ids}
        version = 3
    else:
        ids = store.ids
        arrays = {"codes": store.codes, "factors": store.stored_factors, "ids": ids}
    arrays["next_id"] = np.array([index._store.next_id], np.int64)
    if index._mean is not None:
        # "mean" translates (l2); a mean direction is saved under its own name so
        # files from before directions were centred this way cannot be misread.
        arrays["mean" if index.metric == "l2" else "mean_direction"] = index._mean
    if getattr(index, "_spread", None) is not None:
        arrays["spread"] = index._spread
    half = getattr(index._store, "factor_codes", None)
    if getattr(half, "scale", None) is not None and hasattr(half, "fit"):   # float16 factors (`half.HalfFactors`)
        arrays["factor_scale"] = np.array([half.scale], np.float32)
    if index._vectors is not None:
        arrays["vectors"] = index._vectors.vectors[index._vectors.rows(ids)]
        version = max(version, 2)
    write_file(path, type(index).__name__, index._settings(), arrays, version)


# Arrays each kind of file may hold; anything else is not a file we wrote. Version 3 adds the
# fast-scan forms (see the module docstring), which replace the row-major codes (and for IVF the
# lists' factors and ids) they hold the same contents as.
_ARRAYS = {"Index": {"codes", "factors", "ids", "next_id", "mean", "mean_direction", "spread", "factor_scale",
                     "vectors"},
           "IVFIndex": {"codes", "factors", "ids", "next_id", "list_sizes", "centroids", "vectors"}}
_ARRAYS_V3 = {"Index": {"blocks", "split_factors"},
              "IVFIndex": {"arena_blocks", "arena_factors", "arena_ids", "split_factors"}}
# The arrays each form of the codes needs: row-major (any version), fast-scan blocks of a flat
# index and the IVF arena of fast-scan blocks (version 3).
_FORMS = {"rows": ("codes", "factors", "ids"), "blocks": ("blocks", "split_factors", "factors", "ids"),
          "arena": ("arena_blocks", "split_factors", "arena_factors", "arena_ids")}


def _form(arrays: dict) -> str:
    """Which form of the codes a file's arrays hold (`_FORMS`)."""
    return "arena" if "arena_blocks" in arrays else "blocks" if "blocks" in arrays else "rows"


# Building an index from its settings costs memory before any array is used:
# measured with tracemalloc, about 330 B a coordinate for a Hadamard rotation
# (3 rounds, up to 8 may be asked for) and 33 B per dim^2 for a dense one
# (a float64 Gaussian matrix and its QR, which also takes O(dim^3) time). A
# file may make `load` spend at most this multiple of its own size on that,
# plus an allowance that covers every index up to a dense dim of about 1000
# or a Hadamard dim of about 30,000 whatever it holds.
_BUILD_PER_FILE_BYTE = 16
_BUILD_ALLOWANCE = 32 << 20


def _build_bytes(dim: int, rotation: str) -> int:
    """An upper estimate of the bytes building an index of `dim` with `rotation` allocates."""
    from .rotation import resolve_kind

    kind = resolve_kind(dim) if rotation == "auto" else rotation
    return 40 * dim * dim if kind == "dense" else 1000 * dim


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
    from .index import Index
    from .invlists import arena_runs
    from .ivf import IVFIndex
    path = os.fspath(path)
    for name, value in (("mmap", mmap), ("verify", verify)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    full = verify or not mmap
    kind, settings, arrays, size, version = _read(path, mapped=bool(mmap), verify=full)
    classes = {"Index": Index, "IVFIndex": IVFIndex}
    if kind not in classes:
        raise IndexFileError(f"{path!r} holds an unknown index kind {kind!r}")
    if settings.get("rotation") == "hadamard" and "rotation_rounds" not in settings:
        settings["rotation_rounds"] = 3   # files from before the round count depended on dim
    if kind == "Index" and "estimator" not in settings:
        settings["estimator"] = "direction"   # files from before the "translate" estimator
    form = _form(arrays)
    _check_arrays(path, kind, settings, arrays, size, version, form)
    try:
        index = classes[kind](**settings)
    except (TypeError, ValueError) as e:
        raise IndexFileError(f"{path!r} has invalid settings: {e}") from None
    store = index._store
    factors = arrays["arena_factors" if form == "arena" else "factors"]
    factor_cols, factor_dtype = store.factor_layout()
    if form == "rows":
        fits = arrays["codes"].shape[1] == store.code_bytes
    else:   # blocks of this layout's rows
        fits = index.layout == "fastscan" and arrays[_FORMS[form][0]].shape[1] == store.layout.rows
    if not fits or factors.shape[1] != factor_cols or factors.dtype != factor_dtype:
        raise IndexFileError(f"{path!r} is corrupt: arrays do not match the settings")
    _check_contents(path, index, arrays, form, full)
    centre_name = "mean" if index.metric == "l2" else "mean_direction"
    if centre_name in arrays:
        index._set_mean(arrays[centre_name])
    if "spread" in arrays:
        index._spread = arrays["spread"].copy()
    if "factor_scale" in arrays:
        store.factor_codes.scale = float(arrays["factor_scale"][0])
    next_id = int(arrays["next_id"][0])
    if kind == "IVFIndex":
        if "centroids" in arrays:
            index._set_centroids(arrays["centroids"])
        sizes = arrays["list_sizes"]
        if form == "arena":
            ids = arrays["arena_ids"]
            store.load_arena(arrays["arena_blocks"], factors, ids, sizes, arena_runs(sizes), next_id,
                             writable=not mmap, split=arrays["split_factors"])
            ids = ids[store.positions()]   # the kept vectors' order
        elif mmap and index.layout == "flat":   # the concatenated lists are an arena without slack
            ids = arrays["ids"]
            store.load_arena(arrays["codes"], factors, ids, sizes, sizes, next_id, writable=False)
        else:
            ids = arrays["ids"]
            store.load(arrays["codes"], factors, ids, sizes, next_id)
    elif form == "blocks":
        ids = arrays["ids"]
        store.load_blocks(arrays["blocks"], arrays["split_factors"], factors, ids, next_id)
    else:
        ids = arrays["ids"]
        store.load_arrays(arrays["codes"], factors, ids, next_id)
    if index._vectors is not None:
        vectors = arrays["vectors"]
        index._vectors.load(vectors if mmap else vectors.copy(), ids.copy())
    if mmap:
        index._mapped_from = os.path.abspath(path)
    return index


def _check_arrays(path: str, kind: str, settings: dict, arrays: dict, size: int, version: int = VERSION,
                  form: str = "rows") -> None:
    """Check the arrays' presence, dtypes and shapes against each other and against the settings
    that decide what building the index costs (dim, rotation, nlist), before it is built. form:
    `_form(arrays)`."""
    def bad(what: str):
        raise IndexFileError(f"{path!r} is corrupt: {what}")

    if form != "rows" and (version < 3 or (form == "arena") != (kind == "IVFIndex")):
        bad(f"array {_FORMS[form][0]!r} is not part of a version-{version} {kind} file")
    missing = [name for name in _FORMS[form] + ("next_id",) if name not in arrays]
    if missing:
        bad(f"missing array(s) {', '.join(missing)}")
    if kind == "IVFIndex" and "list_sizes" not in arrays:
        bad("the list sizes (array 'list_sizes') are missing")
    known = _ARRAYS[kind] | (_ARRAYS_V3[kind] if version >= 3 else set())
    unknown = sorted(set(arrays) - known) or sorted(set(arrays) & (set(_FORMS["rows"]) - set(_FORMS[form])))
    if unknown:
        if kind == "Index" or not set(unknown) <= {"mean", "mean_direction"}:
            bad(f"unexpected array(s) {', '.join(unknown)} in an {kind} file")
        bad("an IVFIndex file holds a global centre, which IVFIndex does not use")
    codes, factors, ids = (arrays[n] for n in _FORMS[form][:1] + _FORMS[form][-2:])
    next_id = arrays["next_id"]
    n = ids.shape[0] if ids.ndim == 1 else -1
    if form == "rows":
        codes_agree = codes.ndim == 2 and codes.shape[0] == n
    else:   # whole 32-vector blocks: for n vectors, or the n positions of an IVF arena
        split = arrays["split_factors"]
        blocks = -(-n // 32) if form == "blocks" else n // 32 if n % 32 == 0 else -1
        codes_agree = (codes.ndim == 3 and codes.shape[0] == blocks and codes.shape[2] == 32
                       and split.shape == (2, 32 * blocks) and split.dtype == np.float32)
    if (not codes_agree or codes.dtype != np.uint8 or factors.ndim != 2 or factors.shape[0] != n
            or ids.dtype != np.int64 or next_id.shape != (1,) or next_id.dtype != np.int64):
        bad("the codes, factors, ids and next_id arrays do not agree")
    if form == "arena":   # kept vectors are one a held vector: as many as the lists hold
        n = int(arrays["list_sizes"].sum()) if arrays["list_sizes"].dtype == np.int64 else -1
    dim, rotation = settings.get("dim"), settings.get("rotation", "auto")
    if type(dim) is not int or dim < 2 or rotation not in ("auto", "dense", "hadamard"):
        raise IndexFileError(f"{path!r} has invalid settings: dim {dim!r}, rotation {rotation!r}")
    bits, variant = settings.get("bits", 4), settings.get("variant", "mse")
    if form == "rows" and type(bits) is int and 1 <= bits <= 8 and variant in ("mse", "prod"):
        # (else the constructor refuses; blocks are checked against the layout once it is built)
        # A code is ceil(dim * bits / 8) bytes (its factors included when compact; a QJL sketch takes
        # one of the bits under "prod"): this ties dim to the arrays before a rotation of dim is built.
        width = codes.shape[1] + (factors.shape[1] if settings.get("compact") is True else 0)
        expect = -(-dim * bits // 8) if variant == "mse" else -(-dim * (bits - 1) // 8) - (-dim // 8)
        if width != expect:
            bad(f"codes of {codes.shape[1]} bytes a vector do not fit dim {dim} at {bits} bits")
    for name in ("mean", "mean_direction", "spread"):
        if name in arrays and (arrays[name].shape != (dim,) or arrays[name].dtype != np.float32):
            bad(f"array {name!r} is not a ({dim},) float32 {'spread' if name == 'spread' else 'centre'}")
    if "vectors" in arrays and (arrays["vectors"].shape != (n, dim) or arrays["vectors"].dtype != np.float32):
        bad(f"the kept vectors are not ({n}, {dim}) float32, one row per id")
    if bool(settings.get("keep_vectors", False)) != ("vectors" in arrays):
        bad("the kept vectors are missing" if "vectors" not in arrays
            else "it holds kept vectors but its settings do not keep them")
    if kind == "IVFIndex":
        nlist, sizes, centroids = settings.get("nlist"), arrays["list_sizes"], arrays.get("centroids")
        if type(nlist) is not int or sizes.shape != ((nlist,) if type(nlist) is int else None) \
                or sizes.dtype != np.int64:
            bad(f"list sizes do not match nlist {nlist!r}")
        if centroids is not None and (centroids.shape != (nlist, dim) or centroids.dtype != np.float32):
            bad(f"coarse centroids are not ({nlist}, {dim}) float32")
    elif settings.get("center", "auto") not in ("auto", True, False):
        raise IndexFileError(f"{path!r} has invalid settings: center {settings.get('center')!r}")
    cost = _build_bytes(dim, rotation)
    if cost > _BUILD_PER_FILE_BYTE * size + _BUILD_ALLOWANCE:
        raise IndexFileError(f"{path!r} has implausible settings: building an index of dim {dim} with rotation "
                             f"{rotation!r} takes about {cost / 1e6:,.0f} MB, more than this file of "
                             f"{size:,} bytes can hold an index for")


def _check_contents(path: str, index, arrays: dict, form: str = "rows", full: bool = True) -> None:
    """Check what the arrays hold: next_id, centres, list sizes and, when full, ids, finite factors
    and vectors, and the split factors against the factors (a mapped load without verify does not
    read the large arrays)."""
    from ._validate import MAX_ID
    from .invlists import arena_runs
    from .kernels import fastscan as _fs

    def bad(what: str):
        raise IndexFileError(f"{path!r} is corrupt: {what}")

    ids, next_id = arrays["arena_ids" if form == "arena" else "ids"], int(arrays["next_id"][0])
    factors = arrays["arena_factors" if form == "arena" else "factors"]
    if form == "arena":
        sizes, arena = arrays["list_sizes"], len(ids)
        # each size checked before the sum, which wraps around in int64
        if (sizes < 0).any() or (sizes > arena).any() or int(arena_runs(sizes).sum()) != arena:
            bad(f"list sizes do not match the arena of {arena} positions")
        if full:
            held = np.zeros(arena, bool)
            for at, m in zip(np.cumsum(arena_runs(sizes)) - arena_runs(sizes), sizes):
                held[at:at + m] = True
            if not np.array_equal(ids >= 0, held):
                bad("the arena ids do not mark the lists' vectors (id -1 in the padding)")
            ids = ids[held]
    codes = getattr(index._store, "factor_codes", None)   # compact or float16 packing
    if "factor_scale" in arrays:
        scale = arrays["factor_scale"]
        if not hasattr(codes, "fit") or scale.shape != (1,) or scale.dtype != np.float32:
            bad("a factor scale must be one float32 and serve float16 factors")
        try:
            codes = type(codes)(float(scale[0]))
        except ValueError as e:
            bad(str(e))
    elif hasattr(codes, "fit") and len(ids):
        bad("float16 factors without their scale")
    if not full and not 0 <= next_id <= MAX_ID + 1:   # the ids are not read: against them, below
        bad(f"next_id {next_id} must exceed every id and be at most {MAX_ID + 1}")
    if full:
        if ids.size and (ids.min() < 0 or ids.max() > MAX_ID):
            bad(f"ids must lie in [0, {MAX_ID}], got [{int(ids.min())}, {int(ids.max())}]")
        if len(np.unique(ids)) != len(ids):
            bad("duplicate ids")
        largest = int(ids.max()) if ids.size else -1
        if not largest < next_id <= MAX_ID + 1:   # a lower next_id would hand out ids already held
            bad(f"next_id {next_id} must exceed every id (the largest is {largest}) and be at most {MAX_ID + 1}")
        unpacked = factors if codes is None else codes.unpack(factors)
        if not np.isfinite(unpacked).all():
            bad("factors hold NaN or inf")
        if form != "rows" and not np.array_equal(arrays["split_factors"],
                                                 _fs.split_factors(unpacked, unpacked.shape[0])):
            bad("the split factors are not those of the factors")
    if index.metric != "l2" and "mean" in arrays:
        raise IndexFileError(f"{path!r} was centred by an earlier turboann rule that this "
                             f"version does not read; rebuild the index")
    if index.metric == "l2" and "mean_direction" in arrays:
        bad("an l2 index's centre is stored as 'mean_direction', which only ip and cosine use")
    for name in ("mean", "mean_direction", "spread", "centroids") + (("vectors",) if full else ()):
        if name in arrays and not np.isfinite(arrays[name]).all():
            bad(f"array {name!r} holds NaN or inf")
    if "spread" in arrays and not ((arrays["spread"] > 0).all() and getattr(index, "estimator", None) == "translate"):
        bad("a spread must be positive and serve the 'translate' estimator")
    if "centroids" in arrays:
        with np.errstate(over="ignore"):   # the overflow is what is checked for
            cnorm2 = (arrays["centroids"].astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
        if not np.isfinite(cnorm2).all():
            bad("coarse centroids too large: their squared norms overflow float32")
    if getattr(index, "center", None) is False and ("mean" in arrays or "mean_direction" in arrays):
        bad("it holds a centre but its settings say center=False")
    if "list_sizes" in arrays:
        sizes = arrays["list_sizes"]
        n = len(ids) if form != "arena" or full else int(sizes.sum())
        if form != "arena" and ((sizes < 0).any() or (sizes > n).any() or int(sizes.sum()) != n):
            bad(f"list sizes do not match the {n} vectors")
        if "centroids" not in arrays and n:
            bad("vectors without coarse centroids")
