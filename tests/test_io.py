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
