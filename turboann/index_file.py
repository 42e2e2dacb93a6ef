"""What an index file holds: the arrays of each kind and form, and the checks a load makes on them.

`io` is the container (header, settings, named arrays, checksums); this
module knows what the indexes put in it. `Index._to_file` and
`IVFIndex._to_file` write these arrays, their `_from_file` call the checks
below before and after they build the index from the settings.

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

import numpy as np

from ._validate import MAX_ID
from .invlists import arena_runs
from .io import IndexFileError, Stored
from .kernels import fastscan as _fs
from .rotation import resolve_kind

# Arrays a mapped load reads and checks in full however it is asked: small, and the structure
# (list sizes, next id) or the scores (centres, centroids) depend on them.
SMALL_ARRAYS = frozenset({"next_id", "list_sizes", "centroids", "mean", "mean_direction"})

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
FORMS = {"rows": ("codes", "factors", "ids"), "blocks": ("blocks", "split_factors", "factors", "ids"),
          "arena": ("arena_blocks", "split_factors", "arena_factors", "arena_ids")}


def codes_form(arrays: dict) -> str:
    """Which form of the codes a file's arrays hold (`FORMS`)."""
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
    kind = resolve_kind(dim) if rotation == "auto" else rotation
    return 40 * dim * dim if kind == "dense" else 1000 * dim


def upgrade_settings(kind: str, settings: dict) -> None:
    """Fill in, in place, the settings that files written before they existed leave out."""
    if settings.get("rotation") == "hadamard" and "rotation_rounds" not in settings:
        settings["rotation_rounds"] = 3   # files from before the round count depended on dim
    if kind == "Index" and "estimator" not in settings:
        settings["estimator"] = "direction"   # files from before the "translate" estimator


def check_arrays(stored: Stored, form: str) -> None:
    """Check the arrays' presence, dtypes and shapes against each other and against the settings
    that decide what building the index costs (dim, rotation, nlist), before it is built. form:
    `codes_form(stored.arrays)`."""
    path, kind, settings, arrays = stored.path, stored.kind, stored.settings, stored.arrays
    size, version = stored.size, stored.version

    def bad(what: str):
        raise IndexFileError(f"{path!r} is corrupt: {what}")

    if form != "rows" and (version < 3 or (form == "arena") != (kind == "IVFIndex")):
        bad(f"array {FORMS[form][0]!r} is not part of a version-{version} {kind} file")
    missing = [name for name in FORMS[form] + ("next_id",) if name not in arrays]
    if missing:
        bad(f"missing array(s) {', '.join(missing)}")
    if kind == "IVFIndex" and "list_sizes" not in arrays:
        bad("the list sizes (array 'list_sizes') are missing")
    known = _ARRAYS[kind] | (_ARRAYS_V3[kind] if version >= 3 else set())
    unknown = sorted(set(arrays) - known) or sorted(set(arrays) & (set(FORMS["rows"]) - set(FORMS[form])))
    if unknown:
        if kind == "Index" or not set(unknown) <= {"mean", "mean_direction"}:
            bad(f"unexpected array(s) {', '.join(unknown)} in an {kind} file")
        bad("an IVFIndex file holds a global centre, which IVFIndex does not use")
    codes, factors, ids = (arrays[n] for n in FORMS[form][:1] + FORMS[form][-2:])
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


def check_contents(stored: Stored, form: str, factor_codes, metric: str, estimator, center) -> None:
    """Check what the arrays hold: next_id, centres, list sizes and, when the load reads every array
    (stored.full), ids, finite factors and vectors, and the split factors against the factors (a
    mapped load without verify does not read the large arrays). The rest describe the index built
    from the settings: its store's factor packing (None, or `compact.FactorCodes` /
    `half.HalfFactors`), metric, estimator and center (None where the kind has none)."""
    path, arrays, full = stored.path, stored.arrays, stored.full

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
    codes = factor_codes   # compact or float16 packing
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
    if metric != "l2" and "mean" in arrays:
        raise IndexFileError(f"{path!r} was centred by an earlier turboann rule that this "
                             f"version does not read; rebuild the index")
    if metric == "l2" and "mean_direction" in arrays:
        bad("an l2 index's centre is stored as 'mean_direction', which only ip and cosine use")
    for name in ("mean", "mean_direction", "spread", "centroids") + (("vectors",) if full else ()):
        if name in arrays and not np.isfinite(arrays[name]).all():
            bad(f"array {name!r} holds NaN or inf")
    if "spread" in arrays and not ((arrays["spread"] > 0).all() and estimator == "translate"):
        bad("a spread must be positive and serve the 'translate' estimator")
    if "centroids" in arrays:
        with np.errstate(over="ignore"):   # the overflow is what is checked for
            cnorm2 = (arrays["centroids"].astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
        if not np.isfinite(cnorm2).all():
            bad("coarse centroids too large: their squared norms overflow float32")
    if center is False and ("mean" in arrays or "mean_direction" in arrays):
        bad("it holds a centre but its settings say center=False")
    if "list_sizes" in arrays:
        sizes = arrays["list_sizes"]
        n = len(ids) if form != "arena" or full else int(sizes.sum())
        if form != "arena" and ((sizes < 0).any() or (sizes > n).any() or int(sizes.sum()) != n):
            bad(f"list sizes do not match the {n} vectors")
        if "centroids" not in arrays and n:
            bad("vectors without coarse centroids")
