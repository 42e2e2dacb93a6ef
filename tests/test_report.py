import csv
import os
import io
import sys

import numpy as np
import pytest

from turboann import datasets, report
from turboann import eval as ev
from turboann.index import Index

from conftest import clustered


@pytest.fixture(scope="module")
def tiny():
    x = clustered(1550, 32, seed=7, offset=0.5)
    train, test = x[:1500], x[1500:]
    ids, dist = datasets.exact_ground_truth(train, test, "angular", 64)
    return datasets.Dataset("tiny-32-angular", train, test, ids, dist, "angular")


@pytest.fixture(scope="module")
def tiny_report(tiny):
    pytest.importorskip("faiss")
    return report.run_report(tiny, [1, 2], ["faiss-rabitq"], seed=3)


def test_rows_hold_the_measured_figures(tiny, tiny_report):
    assert [(r.method, r.bits) for r in tiny_report.rows] == [
        ("turboann", 1), ("turboann", 2), ("faiss-rabitq", 1), ("faiss-rabitq", 2)]
    # The turboann row is what an Index with the same settings gives.
    index = Index(32, bits=2, metric="cosine", seed=3)
    index.add(tiny.train)
    _, ids = index.search(tiny.test, 10)
    expected = ev.mean_knn_recall(tiny.distances, ev.true_distances(tiny.train, tiny.test, ids, "angular"), 10)
    row = tiny_report.rows[1]
    assert row.recall10 == pytest.approx(expected)
    assert row.bytes_per_vector == index.code_bytes
    _, ids64 = index.search(tiny.test, 64)
    assert row.r1_at == {k: pytest.approx(ev.recall_at(ids64, tiny.neighbors, k)) for k in report.R1_AT}
    for r in tiny_report.rows:
        assert 0 < r.recall10 <= 1 and r.qps > 0 and r.build_s > 0
        assert all(a <= b for a, b in zip(list(r.r1_at.values()), list(r.r1_at.values())[1:]))
    assert tiny_report.rows[1].recall10 > tiny_report.rows[0].recall10   # 2 bits beat 1 bit


def test_tables_agree_with_rows(tiny_report):
    parsed = list(csv.DictReader(io.StringIO(report.csv_text(tiny_report))))
    assert len(parsed) == 4
    by_key = {(r.method, r.bits): r for r in tiny_report.rows}
    for line in parsed:
        row = by_key[(line["method"], int(line["bits"]))]
        assert float(line["recall10"]) == pytest.approx(row.recall10, abs=1e-6)
        assert int(line["bytes_per_vector"]) == row.bytes_per_vector
        assert float(line["r1_at_64"]) == pytest.approx(row.r1_at[64], abs=1e-6)
    md = report.markdown_table(tiny_report).splitlines()
    assert md[0].startswith("| method | bits | bytes/vector | build | QPS | recall 10@10 | R@1@1 |")
    assert len(md) == 2 + 4
    text = report.text_table(tiny_report).splitlines()
    assert len(text) == 2 + 4 and len({len(line) for line in text}) == 1   # aligned columns


def test_write_report_files(tmp_path, tiny_report):
    paths = report.write_report(tiny_report, tmp_path / "out")
    assert set(paths) == {"markdown", "csv", "json", "recall_vs_bits", "recall_at_k", "recall_vs_qps",
                          "recall_vs_bytes"}
    for key in ("recall_vs_bits", "recall_at_k", "recall_vs_qps", "recall_vs_bytes"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert paths[key].stat().st_size > 10_000
    md = paths["markdown"].read_text()
    assert "recall_vs_bits.png" in md and "recall_vs_qps.png" in md and "| turboann | 2 |" in md
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp-")]


def test_unavailable_and_missing_baselines_are_notes(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "turbovec", None)    # import turbovec now raises ImportError
    notes = []
    out = report.run_report(tiny, [2], ["turbovec", "faiss-tq"], on_note=notes.append)
    assert [r.method for r in out.rows] == ["turboann"] + (["faiss-tq"] if _has("faiss") else [])
    assert any(n.startswith("skipped turbovec: this method needs turbovec") for n in out.notes)
    assert any(n.startswith("skipped turbovec") for n in notes)
    assert all("\n" not in n for n in out.notes)


def test_metric_unavailable_is_noted_once_with_its_bits(tiny):
    pytest.importorskip("faiss")
    l2 = datasets.Dataset("tiny-l2", tiny.train, tiny.test, tiny.neighbors, tiny.distances, "euclidean")
    out = report.run_report(l2, [1, 2], ["faiss-tq"])
    assert [r.method for r in out.rows] == ["turboann", "turboann"]
    assert out.notes == ["skipped faiss-tq at 1, 2 bits: faiss-tq: SQtqmse stores no norm and expects unit "
                         "vectors, so only metric 'cosine' is available, got 'l2'"]


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="unknown baseline 'faiss-xx'"):
        report.run_report(tiny, [1], ["faiss-xx"])
    with pytest.raises(ValueError, match="bits must be <= 8"):
        report.run_report(tiny, [9], [])
    short = datasets.Dataset("short", tiny.train, tiny.test, tiny.neighbors[:, :5], tiny.distances[:, :5], "angular")
    with pytest.raises(ValueError, match="at least 10 neighbours"):
        report.run_report(short, [1], [])


def _has(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_report_files_get_the_usual_permissions(tmp_path, tiny_report):
    old = os.umask(0o022)
    try:
        paths = report.write_report(tiny_report, tmp_path)
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in paths.values()} == {oct(0o644)}


def test_build_times_below_a_tenth_of_a_second_print_in_milliseconds():
    assert report.format_seconds(1.234) == "1.23 s"
    assert report.format_seconds(0.1) == "0.10 s"
    assert report.format_seconds(0.012) == "12.0 ms"
    assert report.format_seconds(0.0042) == "4.2 ms"
    assert report.format_seconds(0.00042) == "0.42 ms"


def test_library_output_becomes_one_note_and_progress_counts_every_row(tiny, capfd):
    pytest.importorskip("faiss")
    rows = []
    out = report.run_report(tiny, [2, 4], ["faiss-pq", "faiss-tq"], on_row=lambda *a: rows.append(a))
    assert [(done, total) for done, total, _ in rows] == [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]
    assert rows[0][2].startswith("turboann") and "recall 10@10" in rows[0][2]
    captured = capfd.readouterr()
    assert "WARNING clustering" not in captured.err + captured.out
    [note] = [n for n in out.notes if n.startswith("faiss-pq:")]   # 1,500 points cannot train 256 centroids well
    assert "k-means codebooks trained on few points" in note and "Faiss asks for" in note
