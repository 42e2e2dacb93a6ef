import http.server
import os
import threading

import h5py
import numpy as np
import pytest

from turboann import datasets as ds
from turboann import eval as ev

from conftest import exact_topk


def write_small(path, n=300, nq=12, dim=16, distance="angular", seed=0, k=20):
    """A seeded ann-benchmarks file with exact ground truth; returns (train, test)."""
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((n, dim)).astype(np.float32)
    test = rng.standard_normal((nq, dim)).astype(np.float32)
    neighbors, distances = ds.exact_ground_truth(train, test, distance, k)
    ds.write_ann_benchmarks(path, train, test, neighbors, distances, distance)
    return train, test


# -- reading and checking ----------------------------------------------------------------

def test_write_then_load_round_trip(tmp_path):
    path = tmp_path / "tiny-16-angular.hdf5"
    train, test = write_small(path)
    data = ds.load_ann_benchmarks(path, queries=5)
    assert data.name == "tiny-16-angular" and data.metric == "cosine" and data.distance == "angular"
    np.testing.assert_array_equal(data.train, train)
    np.testing.assert_array_equal(data.test, test[:5])
    assert data.neighbors.dtype == np.int64 and data.neighbors.shape == (5, 20)
    assert data.distances.dtype == np.float64
    info = ds.inspect(path)
    assert (info["n"], info["dim"], info["queries"], info["k"]) == (300, 16, 12, 20)
    assert info["metric"] == "cosine" and info["bytes"] == os.path.getsize(path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp file left


def test_euclidean_file_maps_to_l2(tmp_path):
    path = tmp_path / "e.hdf5"
    write_small(path, distance="euclidean")
    assert ds.load_ann_benchmarks(path).metric == "l2"


def _corrupt(path, edit):
    write_small(path)
    with h5py.File(path, "r+") as f:
        edit(f)


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.__delitem__("neighbors"), "not an ann-benchmarks file: missing neighbors"),
    (lambda f: (f.__delitem__("test"), f.create_dataset("test", data=np.zeros((12, 5), np.float32))),
     "train has 16 columns but test has 5"),
    (lambda f: (f.__delitem__("distances"), f.create_dataset("distances", data=np.zeros((3, 20), np.float32))),
     "one row per test vector"),
    (lambda f: (f.__delitem__("train"), f.create_dataset("train", data=np.zeros(10, np.float32))),
     "train must be a 2-D numeric array"),
    (lambda f: f.attrs.__delitem__("distance"), "no 'distance' attribute"),
    (lambda f: f.attrs.__setitem__("distance", "jaccard"), "distance 'jaccard' is not supported"),
    (lambda f: f["neighbors"].__setitem__((0, 0), 999), "corrupt ground truth"),
])
def test_bad_layouts_are_named(tmp_path, edit, message):
    path = tmp_path / "bad.hdf5"
    _corrupt(path, edit)
    with pytest.raises(ds.DatasetError, match=message):
        ds.load_ann_benchmarks(path)
    with pytest.raises(ds.DatasetError, match=message):   # `datasets info` agrees with `build`
        ds.inspect(path)


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(ds.DatasetError, match="no such file"):
        ds.inspect(tmp_path / "nope.hdf5")
    text = tmp_path / "notes.hdf5"
    text.write_text("hello")
    with pytest.raises(ds.DatasetError, match="not readable as HDF5"):
        ds.load_ann_benchmarks(text)
    with pytest.raises(ds.DatasetError, match="is a directory"):
        ds.inspect(tmp_path)


def test_embedded_dataset_is_present_and_valid():
    info = ds.inspect(ds.embedded_path())
    assert (info["n"], info["dim"], info["queries"], info["k"], info["distance"]) == (10_000, 384, 500, 100, "angular")
    assert info["bytes"] <= 20 * 2 ** 20


def test_registry_lists_the_standard_files():
    for name in ("glove-25-angular", "glove-100-angular", "glove-200-angular", "sift-128-euclidean",
                 "gist-960-euclidean", "fashion-mnist-784-euclidean", "nytimes-256-angular",
                 "deep-image-96-angular", "dbpedia-openai-100k-angular", "dbpedia-openai-1000k-angular"):
        entry = ds.REGISTRY[name]
        assert entry.url == f"https://ann-benchmarks.com/{name}.hdf5"
        assert name.split("-")[-1] == entry.distance
    # sift: 1M x 128 float32 + 10k queries + ground truth, ann-benchmarks lists it as 501 MB (MiB).
    assert round(ds.REGISTRY["sift-128-euclidean"].size_bytes / 2 ** 20) == 501


# -- exact ground truth -------------------------------------------------------------------

@pytest.mark.parametrize("distance, metric", [("angular", "cosine"), ("euclidean", "l2")])
def test_exact_ground_truth_matches_brute_force_across_blocks(monkeypatch, distance, metric):
    monkeypatch.setattr(ds, "_GT_TRAIN_BLOCK", 70)   # several train blocks and merges
    monkeypatch.setattr(ds, "_GT_QUERY_BLOCK", 7)
    rng = np.random.default_rng(3)
    train = rng.standard_normal((500, 12)).astype(np.float32)
    test = rng.standard_normal((20, 12)).astype(np.float32)
    ids, dist = ds.exact_ground_truth(train, test, distance, k=15)
    np.testing.assert_array_equal(ids, exact_topk(train, test, 15, metric))
    np.testing.assert_allclose(dist, ev.true_distances(train, test, ids, distance), rtol=1e-9, atol=1e-12)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_exact_ground_truth_breaks_ties_by_lower_index(monkeypatch):
    monkeypatch.setattr(ds, "_GT_TRAIN_BLOCK", 4)
    rng = np.random.default_rng(4)
    base = rng.standard_normal((3, 6))
    # Rows 0..11 are four copies each of three points, the copies spread over several blocks.
    train = np.concatenate([base, base, base, base])
    ids, dist = ds.exact_ground_truth(train, base[:1] + 1e-3, "euclidean", k=5)
    assert ids[0, :4].tolist() == [0, 3, 6, 9]
    assert ids.shape == (1, 5)
    ids, _ = ds.exact_ground_truth(train[:3], base[:1], "euclidean", k=50)   # k capped at n
    assert ids.shape == (1, 3)


# -- .fvecs / .ivecs / .bvecs -----------------------------------------------------------------

def write_vecs(path, x):
    x = np.asarray(x)
    rows = np.empty((x.shape[0], 4 + x.shape[1] * x.itemsize), np.uint8)
    rows[:, :4] = np.full((x.shape[0], 1), x.shape[1], "<i4").view(np.uint8)
    rows[:, 4:] = np.ascontiguousarray(x).view(np.uint8).reshape(x.shape[0], -1)
    rows.tofile(path)


@pytest.mark.parametrize("suffix, dtype", [(".fvecs", np.float32), (".ivecs", np.int32), (".bvecs", np.uint8)])
def test_read_vecs_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((37, 9)) * 50).astype(dtype)
    write_vecs(tmp_path / f"a{suffix}", x)
    got = ds.read_vecs(tmp_path / f"a{suffix}")
    assert isinstance(got, np.memmap) and got.shape == (37, 9) and got.dtype == dtype
    np.testing.assert_array_equal(got, x)


def test_read_vecs_rejects_bad_files(tmp_path):
    x = np.arange(40, dtype=np.float32).reshape(5, 8)
    path = tmp_path / "a.fvecs"
    write_vecs(path, x)
    raw = bytearray(path.read_bytes())
    raw[2 * 36:2 * 36 + 4] = np.array([7], "<i4").tobytes()   # row 2 claims dimension 7
    path.write_bytes(bytes(raw))
    with pytest.raises(ds.DatasetError, match="row 2 has dimension 7"):
        ds.read_vecs(path)
    path.write_bytes(bytes(raw[:-3]))
    with pytest.raises(ds.DatasetError, match="does not divide the file size"):
        ds.read_vecs(path)
    with pytest.raises(ds.DatasetError, match="unknown vector file type"):
        ds.read_vecs(tmp_path / "a.txt")
    with pytest.raises(ds.DatasetError, match="no such file"):
        ds.read_vecs(tmp_path / "b.fvecs")


def test_convert_computes_or_takes_ground_truth(tmp_path):
    rng = np.random.default_rng(6)
    train = rng.standard_normal((200, 8)).astype(np.float32)
    test = rng.standard_normal((10, 8)).astype(np.float32)
    write_vecs(tmp_path / "base.fvecs", train)
    write_vecs(tmp_path / "query.fvecs", test)
    info = ds.convert(tmp_path / "base.fvecs", tmp_path / "query.fvecs", tmp_path / "out.hdf5", "euclidean", k=10)
    assert (info["n"], info["queries"], info["k"], info["distance"]) == (200, 10, 10, "euclidean")
    data = ds.load_ann_benchmarks(tmp_path / "out.hdf5")
    np.testing.assert_array_equal(data.train, train)
    np.testing.assert_array_equal(data.neighbors, exact_topk(train, test, 10, "l2"))
    # A given ground truth is kept as is, with its exact distances computed.
    given = np.tile(np.arange(10, dtype=np.int32), (10, 1))
    write_vecs(tmp_path / "gt.ivecs", given)
    ds.convert(tmp_path / "base.fvecs", tmp_path / "query.fvecs", tmp_path / "out2.hdf5", "angular",
               ground_truth=tmp_path / "gt.ivecs", k=10)
    data = ds.load_ann_benchmarks(tmp_path / "out2.hdf5")
    np.testing.assert_array_equal(data.neighbors, given)
    np.testing.assert_allclose(data.distances, ev.true_distances(train, test, given, "angular"), rtol=1e-6)
    write_vecs(tmp_path / "q4.fvecs", test[:, :4])
    with pytest.raises(ds.DatasetError, match="queries have 4 columns"):
        ds.convert(tmp_path / "base.fvecs", tmp_path / "q4.fvecs", tmp_path / "out3.hdf5", "angular")


# -- fetch, against a server on 127.0.0.1 ---------------------------------------------------------

class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `files` (name -> bytes), honouring "Range: bytes=N-" when `ranges` is set."""
    files: dict = {}
    ranges = True
    requests: list = []

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Range")))
        body = self.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if wanted and self.ranges and wanted.startswith("bytes="):
            start, status = int(wanted[6:].rstrip("-")), 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    handler = type("Handler", (_RangeHandler,), {"files": {}, "requests": [], "ranges": True})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_downloads_verifies_and_reuses(tmp_path, server, monkeypatch):
    handler, base = server
    write_small(tmp_path / "src.hdf5")
    body = (tmp_path / "src.hdf5").read_bytes()
    handler.files["tiny.hdf5"] = body
    monkeypatch.setenv("TURBOANN_DATA", str(tmp_path / "cache"))
    seen = []
    path = ds.fetch("tiny", url=f"{base}/tiny.hdf5", on_progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "cache" / "tiny.hdf5" and path.read_bytes() == body
    assert seen[-1] == (len(body), len(body))
    assert not path.with_name("tiny.hdf5.part").exists()
    ds.fetch("tiny", url=f"{base}/tiny.hdf5")                 # already there: no second request
    assert len(handler.requests) == 1


@pytest.mark.parametrize("ranges", [True, False])
def test_fetch_resumes_or_restarts_a_partial_download(tmp_path, server, ranges):
    handler, base = server
    handler.ranges = ranges
    write_small(tmp_path / "src.hdf5")
    body = (tmp_path / "src.hdf5").read_bytes()
    handler.files["tiny.hdf5"] = body
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "tiny.hdf5.part").write_bytes(body[:1000])
    path = ds.fetch("tiny", url=f"{base}/tiny.hdf5", dest_dir=dest)
    assert path.read_bytes() == body
    assert handler.requests == [("/tiny.hdf5", "bytes=1000-")]


def test_fetch_failures_are_one_line(tmp_path, server):
    handler, base = server
    handler.files["junk.hdf5"] = b"<html>not a dataset</html>"
    with pytest.raises(ds.DatasetError, match="HTTP 404") as info:
        ds.fetch("missing", url=f"{base}/missing.hdf5", dest_dir=tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ds.DatasetError, match="not an ann-benchmarks file"):
        ds.fetch("junk", url=f"{base}/junk.hdf5", dest_dir=tmp_path)
    assert not (tmp_path / "junk.hdf5.part").exists() and not (tmp_path / "junk.hdf5").exists()
    # Port 1 on the loopback refuses connections: the offline path, without touching the network.
    with pytest.raises(ds.DatasetError, match=r"cannot download .*\(offline\?"):
        ds.fetch("glove-25-angular", url="http://127.0.0.1:1/glove-25-angular.hdf5", dest_dir=tmp_path, timeout=5)
    with pytest.raises(ds.DatasetError, match="unknown dataset 'no-such-set'"):
        ds.fetch("no-such-set", dest_dir=tmp_path)
    with pytest.raises(ValueError, match="name must be a dataset name"):
        ds.fetch("../evil", dest_dir=tmp_path)
