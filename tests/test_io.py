import os
import struct

import numpy as np
import pytest

import turboann as ta
from turboann import io


@pytest.fixture()
def saved(tmp_path, data_64):
    x, q = data_64
    index = ta.Index(64, bits=3, metric="l2", variant="prod", seed=5, center=True)
    index.add(x[:1000], ids=np.arange(1000) * 3)
    index.remove([0, 3, 300])
    path = tmp_path / "a.tann"
    index.save(path)
    return index, path, q


def test_round_trip_identical_results(saved):
    index, path, q = saved
    loaded = ta.load(path)
    assert type(loaded) is ta.Index
    assert (loaded.dim, loaded.bits, loaded.metric, loaded.variant, loaded.seed) == (64, 3, "l2", "prod", 5)
    assert len(loaded) == len(index) == 997
    D1, I1 = index.search(q, 10)
    D2, I2 = loaded.search(q, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    # the loaded index keeps working: add continues ids, remove works
    loaded.add(q[:2])
    assert loaded.ids[-2:].tolist() == [2998, 2999]
    assert loaded.remove([6]) == 1


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_round_trip_each_metric(tmp_path, data_64, metric):
    x, q = data_64
    index = ta.Index(64, bits=2, metric=metric)
    index.add(x[:500])
    index.save(tmp_path / "b.tann")
    D, I = ta.load(tmp_path / "b.tann").search(q, 5)
    np.testing.assert_array_equal(I, index.search(q, 5)[1])


def test_round_trip_keeps_the_centre(tmp_path, data_64):
    x, q = data_64
    index = ta.Index(64, bits=2, metric="cosine", center=True)
    index.add(x[:500])
    index.save(tmp_path / "c.tann")
    loaded = ta.load(tmp_path / "c.tann")
    np.testing.assert_array_equal(loaded.mean, index.mean)
    np.testing.assert_array_equal(loaded.search(q, 5)[0], index.search(q, 5)[0])


def test_file_centred_by_the_earlier_rule_is_rejected(tmp_path, data_64):
    index = ta.Index(64, bits=2, metric="cosine", center=True)
    index.add(data_64[0][:300])
    index.save(tmp_path / "c.tann")
    kind, settings, arrays = io.read_file(tmp_path / "c.tann")
    arrays = dict(arrays)
    arrays["mean"] = arrays.pop("mean_direction")   # how files before the direction centre held it
    io.write_file(tmp_path / "old.tann", kind, settings, arrays)
    with pytest.raises(io.IndexFileError, match="centred by an earlier turboann rule"):
        ta.load(tmp_path / "old.tann")


def test_save_is_atomic_and_leaves_no_temp_files(saved, tmp_path):
    index, path, q = saved
    index.save(path)      # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["a.tann"]


def _corrupt(path, pos, value=None):
    data = bytearray(path.read_bytes())
    data[pos] = (data[pos] ^ 0xFF) if value is None else value
    path.write_bytes(bytes(data))


def test_truncated_file(saved):
    _, path, _ = saved
    data = path.read_bytes()
    for cut in (4, 20, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(io.IndexFileError, match="truncated|not a turboann|corrupt"):
            ta.load(path)


def test_flipped_header_byte(saved):
    _, path, _ = saved
    _corrupt(path, 30)
    with pytest.raises(io.IndexFileError, match="header checksum mismatch"):
        ta.load(path)


def test_flipped_payload_byte(saved):
    _, path, _ = saved
    _corrupt(path, os.path.getsize(path) - 3)
    with pytest.raises(io.IndexFileError, match="checksum mismatch in array"):
        ta.load(path)


def test_wrong_version_and_magic(saved, tmp_path):
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    data[8:12] = struct.pack("<I", 99)
    path.write_bytes(bytes(data))
    with pytest.raises(io.IndexFileError, match="format version 99; this turboann reads versions 1, 2"):
        ta.load(path)
    other = tmp_path / "x.tann"
    other.write_bytes(b"PK\x03\x04 not an index at all")
    with pytest.raises(io.IndexFileError, match="not a turboann index file"):
        ta.load(other)
    with pytest.raises(io.IndexFileError, match="cannot open index file"):
        ta.load(tmp_path / "missing.tann")
    assert issubclass(io.IndexFileError, ValueError)


def test_huge_length_in_header_is_not_trusted(tmp_path):
    """A well-formed header (valid checksum) that claims more bytes than the file has."""
    import json
    import zlib
    path = tmp_path / "c.tann"
    io.write_file(path, "Index", {"dim": 4}, {"codes": np.zeros((3, 2), np.uint8)})
    assert io.read_file(path)[2]["codes"].shape == (3, 2)
    data = path.read_bytes()
    hlen = struct.unpack("<I", data[12:16])[0]
    meta = json.loads(data[16:16 + hlen])
    meta["arrays"][0].update(shape=[3_000_000_000, 2], nbytes=6_000_000_000)
    header = json.dumps(meta).encode()
    body = struct.pack("<II", 1, len(header)) + header
    path.write_bytes(b"TURBOANN" + body + struct.pack("<I", zlib.crc32(body)) + data[16 + hlen + 4:])
    with pytest.raises(io.IndexFileError, match="truncated: array 'codes' needs bytes up to"):
        io.read_file(path)


# -- crafted files (issue 17): every one refused with IndexFileError, before anything large is built ----

import json  # noqa: E402
import stat as _stat  # noqa: E402
import time  # noqa: E402

import filefuzz  # noqa: E402  (tests/filefuzz.py)


def _rewrite(path, change_settings=None, change_arrays=None, kind=None):
    """Rewrite a saved file with its settings and arrays changed, every checksum recomputed."""
    k, settings, arrays = io.read_file(path)
    settings, arrays = dict(settings), {n: a.copy() for n, a in arrays.items()}
    if change_settings:
        change_settings(settings)
    if change_arrays:
        change_arrays(arrays)
    io.write_file(path, kind or k, settings, arrays, version=max(2, filefuzz.file_version(path)))


def _refused(path, match):
    with pytest.raises(io.IndexFileError, match=match):
        ta.load(path)


def test_crafted_header_structures_are_refused(saved):
    _, path, _ = saved
    version, meta, payload = filefuzz.split(path.read_bytes())
    cases = [
        (b"[" * 100_000 + b"]" * 100_000, "unreadable header"),           # RecursionError in json
        (json.dumps([1, 2]).encode(), "not an object with kind"),
        (json.dumps({**meta, "arrays": [1]}).encode(), "bad array entry"),
        (json.dumps({**meta, "arrays": 5}).encode(), "not an object with kind"),
        (json.dumps({**meta, "settings": []}).encode(), "not an object with kind"),
        (json.dumps({**meta, "arrays": meta["arrays"] * 2}).encode(), "listed twice"),
    ]
    bad_shape = json.loads(json.dumps(meta))
    bad_shape["arrays"][0]["shape"] = [float("inf"), 2]                  # int(inf): OverflowError before
    cases.append((json.dumps(bad_shape).encode(), "bad array entry"))
    wrapped = json.loads(json.dumps(meta))
    wrapped["arrays"][0].update(shape=[2 ** 32, 2 ** 32], nbytes=0)       # wraps to 0 in int64
    cases.append((json.dumps(wrapped).encode(), "size does not match its shape"))
    for header, match in cases:
        path.write_bytes(filefuzz.join(version, None, payload, header=header))
        _refused(path, match)


@pytest.mark.parametrize("settings, match", [
    ({"dim": 2 ** 22}, "do not fit dim|implausible"),
    ({"dim": 2 ** 24, "rotation": "hadamard"}, "do not fit dim|implausible"),
    ({"dim": 8000, "rotation": "dense"}, "do not fit dim|implausible"),
    ({"dim": "64"}, "invalid settings"),
    ({"bits": 9}, "invalid settings"),
    ({"center": [0.0] * 64}, "invalid settings: center"),
    ({"metric": None}, "invalid settings"),
    ({"extra": 1}, "invalid settings"),
])
def test_crafted_settings_are_refused_before_building(saved, settings, match):
    _, path, _ = saved
    _rewrite(path, lambda s: s.update(settings))
    t0 = time.perf_counter()
    _refused(path, match)
    assert time.perf_counter() - t0 < 1.0   # nothing of dim 2^22 or a dense 8000 x 8000 was built


def test_empty_file_of_a_huge_dim_is_refused_by_size(tmp_path):
    """Zero rows carry no bytes, so dim cannot be tied to the arrays: the build cost is bounded by size."""
    path = tmp_path / "e.tann"
    ta.Index(64, bits=4, metric="ip", layout="flat").save(path)
    dim = 2 ** 22
    _rewrite(path, lambda s: s.update(dim=dim, rotation="hadamard"),
             lambda a: a.update(codes=np.zeros((0, dim // 2), np.uint8)))
    _refused(path, "implausible settings: building an index of dim 4194304")


def test_crafted_ivf_nlist_is_checked_against_the_list_sizes(tmp_path, data_64):
    x = data_64[0]
    index = ta.IVFIndex(64, nlist=4, bits=2, layout="flat")   # the arena form: tests/test_mmap.py
    index.set_centroids(x[:4])
    index.add(x[:100])
    path = tmp_path / "i.tann"
    index.save(path)
    _rewrite(path, lambda s: s.update(nlist=2 ** 31))
    _refused(path, "list sizes do not match nlist 2147483648")
    index.save(path)
    _rewrite(path, change_arrays=lambda a: a.update(list_sizes=np.array([2 ** 62, 2 ** 62, 2 ** 62, 2 ** 62 + 100])))
    _refused(path, "list sizes do not match the 100 vectors")     # the int64 sum wraps to 100
    index.save(path)
    _rewrite(path, change_arrays=lambda a: a["ids"].__setitem__(0, -7))
    _refused(path, r"ids must lie in \[0, ")
    index.save(path)
    _rewrite(path, change_arrays=lambda a: a.update(mean=np.zeros(64, np.float32)))
    _refused(path, "global centre")


@pytest.mark.parametrize("change, match", [
    (lambda a: a["next_id"].__setitem__(0, 0), "next_id 0 must exceed every id"),
    (lambda a: a["next_id"].__setitem__(0, -5), "next_id -5 must exceed"),
    (lambda a: a["ids"].__setitem__(0, -1), r"ids must lie in \[0, "),
    (lambda a: a["ids"].__setitem__(0, 2 ** 63 - 1), r"ids must lie in \[0, "),
    (lambda a: a["ids"].__setitem__(1, a["ids"][0]), "duplicate ids"),
    (lambda a: a["mean"].__setitem__(3, np.nan), "'mean' holds NaN"),
    (lambda a: a["factors"].__setitem__((5, 0), np.inf), "factors hold NaN or inf"),
    (lambda a: a.update(mean_direction=a.pop("mean")), "stored as 'mean_direction'"),
    (lambda a: a.update(codes=a["codes"][:, :-1].copy()), "do not fit dim"),
    (lambda a: a.update(ids=a["ids"].astype(np.float32)), "do not agree"),
    (lambda a: a.update(vectors=np.zeros((997, 64), np.float32)), "settings do not keep them"),
    (lambda a: a.update(surprise=np.zeros(3, np.uint8)), "unexpected array"),
    (lambda a: a.pop("next_id"), "missing array"),
])
def test_crafted_arrays_are_refused(saved, change, match):
    _, path, _ = saved
    _rewrite(path, change_arrays=change)
    _refused(path, match)


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.tann"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    _refused(fifo, "not a regular file")          # opening it for reading used to wait for a writer
    assert time.perf_counter() - t0 < 1.0
    if os.path.exists("/dev/zero") and _stat.S_ISCHR(os.stat("/dev/zero").st_mode):
        _refused("/dev/zero", "not a regular file")
    _refused(tmp_path, "it is a directory")


def test_fuzz_flips_truncations_and_crafted_files(tmp_path):
    """Seeded: every mutated file of every kind is refused with IndexFileError or loads into an index
    that searches; bench/fuzz_files.py runs the long version."""
    t0 = time.perf_counter()
    counts = filefuzz.run(tmp_path, seed=17, per_file=12)
    refused = {m: counts.get((m, "refused"), 0) for m in filefuzz.MUTATIONS}
    assert sum(counts.values()) == 5 * 4 * 12
    assert refused["truncate"] == 60 and refused["header"] >= 50 and refused["arrays"] >= 30, counts
    assert time.perf_counter() - t0 < 60


def test_old_files_still_load(tmp_path, data_64):
    """A version-1 flat file without rotation_rounds (written before the round count depended on dim),
    its fast-scan codes row-major as version 1 held them."""
    x, q = data_64
    index = ta.Index(256, bits=2, metric="ip", rotation="hadamard", rotation_rounds=3)
    index.add(np.tile(x[:300], (1, 4)))
    path = tmp_path / "old.tann"
    index.save(path)
    kind, settings, arrays = io.read_file(path)
    settings = {k: v for k, v in settings.items() if k not in ("rotation_rounds", "layout")}
    arrays = {"codes": index._store.codes, **{n: a for n, a in arrays.items() if n not in ("blocks", "split_factors")}}
    io.write_file(path, kind, settings, arrays, version=1)
    loaded = ta.load(path)
    qq = np.tile(q[:5], (1, 4))
    np.testing.assert_array_equal(loaded.search(qq, 5)[1], index.search(qq, 5)[1])


def test_next_save_removes_temp_files_of_killed_saves(saved, tmp_path):
    index, path, _ = saved
    dead = 2 ** 22 + 12345   # beyond the default pid_max: no such process
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    stray = tmp_path / f".a.tann.tmp{dead}-abcd1234"            # a killed save of a.tann
    live = tmp_path / f".a.tann.tmp{os.getpid()}-efgh5678"       # a save still running in this process
    other = tmp_path / f".b.tann.tmp{dead}-abcd1234"            # another path's
    unrelated = tmp_path / ".tmp-zzzz.turboann"
    for p in (stray, live, other, unrelated):
        p.write_bytes(b"partial")
    index.save(path)
    assert sorted(os.listdir(tmp_path)) == sorted(["a.tann", live.name, other.name, unrelated.name])
