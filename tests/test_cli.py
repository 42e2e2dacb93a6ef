import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import turboann as ta
from turboann import cli as cli_module
from turboann import datasets
from turboann import eval as ev
from turboann.cli import cli

from conftest import write_ann_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small angular and euclidean ann-benchmarks files, and a 4-bit index of the angular one."""
    root = tmp_path_factory.mktemp("cli")
    paths = {"angular": root / "small-32-angular.hdf5", "euclidean": root / "small-16-euclidean.hdf5",
             "index": root / "small.tann", "root": root}
    write_ann_file(paths["angular"], seed=1)
    write_ann_file(paths["euclidean"], n=1000, nq=20, dim=16, distance="euclidean", seed=2)
    run_ok(["build", str(paths["angular"]), str(paths["index"]), "--bits", "4"])
    return paths


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def run_ok(args):
    result = run(args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def run_fails(args, message):
    """The command fails with one line on stderr naming `message`, and no traceback anywhere."""
    result = run(args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("turboann: error: ") and message in lines[0], lines[0]
    return result


# -- build and search -----------------------------------------------------------------------------

def test_build_prints_and_saves(files):
    out = files["root"] / "b.tann"
    result = run_ok(["build", files["angular"], out, "--bits", "2", "--seed", "5"])
    assert "2,000 vectors, dim 32, 2 bits, metric cosine" in result.stdout
    assert "bytes/vector" in result.stdout and "vectors/s" in result.stdout
    index = ta.load(out)
    assert (len(index), index.dim, index.bits, index.metric, index.seed) == (2000, 32, 2, "cosine", 5)
    assert f"{index.code_bytes} bytes/vector" in result.stdout


@pytest.mark.parametrize("metric, expected", [("auto", "l2"), ("ip", "ip"), ("cosine", "cosine")])
def test_build_metric_follows_the_file_or_the_option(files, metric, expected):
    out = files["root"] / f"e-{metric}.tann"
    run_ok(["build", files["euclidean"], out, "--metric", metric, "--variant", "prod", "--bits", "3"])
    index = ta.load(out)
    assert index.metric == expected and index.variant == "prod"


def test_chunked_build_matches_one_add(files, monkeypatch):
    monkeypatch.setattr(cli_module, "BUILD_CHUNK", 300)      # 2000 rows: seven chunks behind a progress bar
    out = files["root"] / "chunked.tann"
    run_ok(["build", files["angular"], out, "--bits", "3"])
    chunked = ta.load(out)
    data = datasets.load_ann_benchmarks(files["angular"])
    whole = ta.Index(32, bits=3, metric="cosine")
    whole.add(data.train)
    np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-5, atol=1e-6)
    _, a = chunked.search(data.test, 10)
    _, b = whole.search(data.test, 10)
    assert (a == b).mean() > 0.98


def test_search_prints_and_writes_json(files):
    out = files["root"] / "r.json"
    result = run_ok(["search", files["index"], files["angular"], "-k", "10", "--queries", "30", "--threads", "1",
                     "--latency-queries", "12", "--output", out])
    doc = json.loads(out.read_text())
    # The recall printed and written is that of the index's own search, by the ann-benchmarks rule.
    data = datasets.load_ann_benchmarks(files["angular"], queries=30)
    _, ids = ta.load(files["index"]).search(data.test, 10)
    expected = ev.mean_knn_recall(data.distances, ev.true_distances(data.train, data.test, ids, "angular"), 10)
    assert doc["results"]["recall"] == pytest.approx(expected)
    assert f"recall 10@10 (ann-benchmarks): {expected:.4f}" in result.stdout
    assert set(doc["results"]["r1_at"]) == {"1", "2", "4", "8", "10"}
    assert doc["results"]["r1_at"]["10"] == pytest.approx(ev.recall_at(ids, data.neighbors, 10))
    assert doc["results"]["latency_queries"] == 12
    assert 0 < doc["results"]["latency_ms_p50"] <= doc["results"]["latency_ms_p99"]
    assert doc["settings"]["queries"] == 30 and doc["settings"]["threads"] == 1
    assert doc["settings"]["index_settings"]["bits"] == 4
    assert doc["machine"]["cores"] >= 1 and "numpy" in doc["machine"]["versions"]
    for text in ("R@1@1", "QPS (batch)", "p50", "p99"):
        assert text in result.stdout


def test_search_mapped_and_exact(files):
    """--mmap maps the file, --exact takes fast-scan's worst-case bound: the same recall here, recorded."""
    runs = {}
    for flags in ((), ("--mmap", "--exact")):
        out = files["root"] / f"r{len(flags)}.json"
        run_ok(["search", files["index"], files["angular"], "--queries", "30", "--threads", "1",
                "--latency-queries", "0", "--output", out, *flags])
        runs[flags] = json.loads(out.read_text())
    plain, mapped = runs[()], runs[("--mmap", "--exact")]
    assert (plain["settings"]["mmap"], plain["settings"]["exact"]) == (False, False)
    assert (mapped["settings"]["mmap"], mapped["settings"]["exact"]) == (True, True)
    assert mapped["results"]["recall"] == pytest.approx(plain["results"]["recall"])


def test_search_notes_a_metric_other_than_the_files(files):
    out = files["root"] / "ip.tann"
    run_ok(["build", files["angular"], out, "--metric", "ip", "--bits", "2"])
    result = run_ok(["search", out, files["angular"], "--latency-queries", "0"])
    assert "ranks by ip but" in result.stderr and "latency" not in result.stdout


def test_compact_build(files):
    out = files["root"] / "compact.tann"
    result = run_ok(["build", files["angular"], out, "--bits", "2", "--compact"])
    index = ta.load(out)
    assert index.compact and index.code_bytes == index.dim * 2 // 8
    assert f"{index.code_bytes} bytes/vector" in result.stdout
    run_fails(["build", files["angular"], out, "--bits", "2", "--compact", "--nlist", "4"],
              "compact codes are for flat indexes")
    run_fails(["build", files["angular"], out, "--bits", "1", "--compact"], "compact=True needs bits 2, 3 or 4")


def test_ivf_build_search_rerank_and_sweep(files):
    pytest.importorskip("faiss")
    out = files["root"] / "ivf.tann"
    result = run_ok(["build", files["angular"], out, "--bits", "4", "--nlist", "8", "--keep-vectors"])
    index = ta.load(out)
    assert type(index).__name__ == "IVFIndex" and index.nlist == 8 and index.keep_vectors
    assert "training 8 coarse centroids" in result.stderr
    data = datasets.load_ann_benchmarks(files["angular"], queries=30)
    report = files["root"] / "ivf.json"
    result = run_ok(["search", out, files["angular"], "--queries", "30", "--nprobe", "2", "--rerank", "40",
                     "--latency-queries", "0", "--sweep", "1,8", "--output", report])
    _, ids = index.search(data.test, 10, nprobe=2, rerank=40)
    expected = ev.mean_knn_recall(data.distances, ev.true_distances(data.train, data.test, ids, "angular"), 10)
    doc = json.loads(report.read_text())
    assert doc["results"]["recall"] == pytest.approx(expected)
    assert doc["settings"]["nprobe"] == 2 and doc["settings"]["rerank"] == 40
    sweep = {row["nprobe"]: row["recall"] for row in doc["results"]["sweep"]}
    _, all_lists = index.search(data.test, 10, nprobe=8, rerank=40)
    assert sweep[8] == pytest.approx(
        ev.mean_knn_recall(data.distances, ev.true_distances(data.train, data.test, all_lists, "angular"), 10))
    assert sweep[1] <= sweep[8] and "nprobe" in result.stdout


def test_ivf_option_errors(files):
    pytest.importorskip("faiss")
    run_fails(["search", files["index"], files["angular"], "--nprobe", "2"], "is a flat index: --nprobe")
    run_fails(["search", files["index"], files["angular"], "--rerank", "20"], "keep_vectors=True")
    run_fails(["build", files["angular"], files["root"] / "x.tann", "--nlist", "5000"],
              "at most the 2,000 train vectors, got 5000")
    out = files["root"] / "ivf4.tann"
    run_ok(["build", files["angular"], out, "--nlist", "4"])
    run_fails(["search", out, files["angular"], "--nprobe", "9"], "nprobe")


# -- report -------------------------------------------------------------------------------------------

def test_report_writes_tables_and_plots(files):
    pytest.importorskip("faiss")
    out = files["root"] / "report"
    result = run_ok(["report", files["angular"], "--bits", "1,2", "--baselines", "faiss-rabitq,faiss-tq",
                     "--queries", "20", "--out", out])
    for name in ("report.md", "report.csv", "report.json", "recall_vs_bits.png", "recall_at_k.png"):
        assert (out / name).is_file()
    assert (out / "recall_vs_bits.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / "report.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and rows[0].startswith("method,bits,bytes_per_vector")
    assert "recall 10@10" in result.stdout and "faiss-rabitq" in result.stdout
    md = (out / "report.md").read_text()
    assert f"Made by `turboann report {files['angular']} --bits 1,2 --baselines faiss-rabitq,faiss-tq" in md


def test_report_skips_a_missing_baseline_with_one_line(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "turbovec", None)
    result = run_ok(["report", files["euclidean"], "--bits", "2", "--baselines", "turbovec",
                     "--out", files["root"] / "r2"])
    assert "skipped turbovec" in result.stdout
    assert "Traceback" not in result.output


def test_report_defaults_to_the_embedded_dataset(files, monkeypatch):
    seen = {}

    def fake_run(data, bits, baselines, **kwargs):   # the full measurement is the manual run's job
        seen.update(name=data.name, n=data.train.shape[0], bits=bits, baselines=baselines)
        raise ValueError("stop here")

    monkeypatch.setattr("turboann.report.run_report", fake_run)
    result = run(["report", "--bits", "2", "--baselines", ""])
    assert result.exit_code == 1 and "stop here" in result.stderr
    assert seen == {"name": datasets.EMBEDDED_NAME, "n": 10_000, "bits": [2], "baselines": []}
    assert "using the embedded dataset" in result.stderr


def test_report_without_embedded_dataset_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "_EMBEDDED_DIR", tmp_path)
    run_fails(["report"], "embedded dataset")


# -- datasets -------------------------------------------------------------------------------------------

def test_datasets_list_and_info(files, monkeypatch, tmp_path):
    monkeypatch.setenv("TURBOANN_DATA", str(tmp_path))
    (tmp_path / "glove-25-angular.hdf5").write_bytes(b"")
    result = run_ok(["datasets", "list"])
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    for name in ("glove-25-angular", "sift-128-euclidean", "gist-960-euclidean", "dbpedia-openai-100k-angular"):
        assert name in lines
    assert lines["glove-25-angular"].rstrip().endswith("yes") and not lines["sift-128-euclidean"].endswith("yes")
    assert str(tmp_path) in result.stdout
    info = run_ok(["datasets", "info", files["euclidean"]]).stdout
    assert "1,000 x 16" in info and "euclidean (turboann metric l2)" in info
    assert "10,000 x 384" in run_ok(["datasets", "info"]).stdout


def test_datasets_convert(files, tmp_path):
    rng = np.random.default_rng(9)
    for name, rows in (("base", 300), ("query", 7)):
        x = rng.standard_normal((rows, 8)).astype(np.float32)
        raw = np.empty((rows, 9), np.float32)
        raw[:, 0] = np.array([8], np.int32).view(np.float32)[0]
        raw[:, 1:] = x
        raw.tofile(tmp_path / f"{name}.fvecs")
    out = tmp_path / "conv.hdf5"
    result = run_ok(["datasets", "convert", tmp_path / "base.fvecs", tmp_path / "query.fvecs", out,
                     "--distance", "euclidean", "-k", "20"])
    assert "train 300 x 8, test 7, 20 neighbours" in result.stdout
    assert "computing exact ground truth" in result.stderr
    run_ok(["build", out, tmp_path / "conv.tann", "--bits", "2"])


def test_datasets_fetch_from_a_local_file_url(files, tmp_path):
    url = files["euclidean"].resolve().as_uri()        # file:// needs no server and no network
    result = run_ok(["datasets", "fetch", "mine", "--url", url, "--dir", tmp_path])
    assert (tmp_path / "mine.hdf5").read_bytes() == files["euclidean"].read_bytes()
    assert str(tmp_path / "mine.hdf5") in result.stdout


# -- every error is one line ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad(files):
    root = files["root"]
    not_ann = root / "not-ann.hdf5"
    with h5py.File(not_ann, "w") as f:
        f["train"] = np.zeros((5, 4), np.float32)
    text = root / "text.hdf5"
    text.write_text("just text\n")
    corrupt = root / "corrupt.tann"
    raw = bytearray(files["index"].read_bytes())
    raw[-10] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    junk = root / "junk.tann"
    junk.write_bytes(b"not an index at all")
    return {"not_ann": not_ann, "text": text, "corrupt": corrupt, "junk": junk}


@pytest.mark.parametrize("args, message", [
    (["build", "{root}/missing.hdf5", "{root}/x.tann"], "no such file"),
    (["build", "{not_ann}", "{root}/x.tann"], "not an ann-benchmarks file: missing test, neighbors, distances"),
    (["build", "{text}", "{root}/x.tann"], "not an ann-benchmarks file"),
    (["build", "{angular}", "{root}/x.tann", "--bits", "0"], "Invalid value for '--bits'"),
    (["build", "{angular}", "{root}/x.tann", "--metric", "hamming"], "Invalid value for '--metric'"),
    (["build", "{angular}", "{root}/x.tann", "--variant", "prod", "--bits", "1"], "it needs --bits >= 2"),
    (["build", "{angular}", "{root}/no-such-dir/x.tann"], "no-such-dir"),
    (["build", "{angular}"], "Missing argument 'INDEX'"),
    (["search", "{root}/missing.tann", "{angular}"], "cannot open index file"),
    (["search", "{corrupt}", "{angular}"], "checksum mismatch"),
    (["search", "{junk}", "{angular}"], "not a turboann index file"),
    (["search", "{index}", "{euclidean}"], "dimension mismatch: index"),
    (["search", "{index}", "{not_ann}"], "not an ann-benchmarks file"),
    (["search", "{index}", "{angular}", "-k", "0"], "Invalid value for '-k'"),
    (["search", "{index}", "{angular}", "-k", "101"], "ground truth for 100 neighbours"),
    (["search", "{index}", "{angular}", "--threads", "999"], "NUMBA_NUM_THREADS"),
    (["report", "{angular}", "--baselines", "faiss-pq,nope"], "unknown baseline 'nope'"),
    (["report", "{angular}", "--bits", "1,9"], "Invalid value for '--bits'"),
    (["report", "{angular}", "--bits", "two"], "comma-separated integers"),
    (["report", "{text}"], "not an ann-benchmarks file"),
    (["datasets", "fetch", "nope-1-angular"], "unknown dataset 'nope-1-angular'"),
    (["datasets", "fetch", "glove-25-angular", "--url", "http://127.0.0.1:1/g.hdf5", "--dir", "{root}/dl"],
     "offline?"),
    (["datasets", "info", "{not_ann}"], "not an ann-benchmarks file"),
    (["datasets", "convert", "{text}", "{text}", "{root}/c.hdf5", "--distance", "angular"],
     "unknown vector file type"),
    (["warmup", "--bits", "0,4"], "Invalid value for '--bits'"),
    (["warmup", "--kinds", "hnsw"], "Invalid value for '--kinds'"),
    (["warmup", "--jobs", "0"], "Invalid value for '--jobs'"),
    (["nonsense"], "No such command 'nonsense'"),
])
def test_errors_are_one_line(files, bad, args, message):
    names = {**{k: str(v) for k, v in files.items()}, **{k: str(v) for k, v in bad.items()}}
    run_fails([a.format(**names) for a in args], message)


def test_root_cli_py_runs_the_same_cli(files):
    ok = subprocess.run([sys.executable, str(REPO / "cli.py"), "datasets", "info", str(files["euclidean"])],
                        capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and "1,000 x 16" in ok.stdout
    bad = subprocess.run([sys.executable, str(REPO / "cli.py"), "build", "missing.hdf5", "x.tann"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 1 and bad.stderr == "turboann: error: missing.hdf5: no such file\n"


def test_search_with_no_test_queries_and_info_with_bad_ground_truth(files, tmp_path):
    from turboann import datasets

    train = datasets.load_ann_benchmarks(files["angular"]).train
    empty = tmp_path / "no-queries.hdf5"
    datasets.write_ann_benchmarks(empty, train, train[:0], np.zeros((0, 100), np.int64),
                                  np.zeros((0, 100)), "angular")
    run_fails(["search", str(files["index"]), str(empty)], "has no test queries to search with")
    bad_gt = tmp_path / "bad-gt.hdf5"
    with h5py.File(files["angular"], "r") as f:
        neighbors = f["neighbors"][:]
        neighbors[0, 0] = train.shape[0] + 5
        datasets.write_ann_benchmarks(bad_gt, f["train"][:], f["test"][:], neighbors, f["distances"][:], "angular")
    run_fails(["datasets", "info", str(bad_gt)], "corrupt ground truth")
    run_fails(["build", str(bad_gt), str(tmp_path / "x.tann")], "corrupt ground truth")
