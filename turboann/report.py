"""Recall-vs-bits reports: turboann and its baselines at matched code bytes, as tables and plots.

`run_report` builds every method at every bit width on one ann-benchmarks
dataset, in this one process, on the same vectors, queries and ground truth,
and measures:

    bytes/vector  codes plus per-vector factors (ids not counted)
    build         time to add the train vectors, training/calibration included (ms where seconds round to 0)
    QPS           queries per second of one batch search of all queries, k=10
    recall 10@10  ann-benchmarks k-NN recall (epsilon rule) of that search
    R@1@k         true nearest neighbour among the first k, k = 1, 2, 4, ..., 64, from one k=64 search

`write_report` writes report.md, report.csv, report.json, recall_vs_bits.png,
recall_at_k.png, recall_vs_qps.png and recall_vs_bytes.png into a directory.

What the libraries print while a row is measured (Faiss's k-means warnings
on stderr, Python warnings) is captured, not shown: the report's notes say
what it meant, once per method (e.g. that PQ trained on few points).
"""
from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import _machine, _validate
from ._files import atomic_path, write_text
from . import eval as ev
from .datasets import Dataset

DEFAULT_BASELINES = ("faiss-pq", "faiss-pqfs", "faiss-rabitq", "faiss-tq", "turbovec")
K = 10
R1_AT = (1, 2, 4, 8, 16, 32, 64)
# An untimed build on this many rows first compiles turboann's kernels (or loads them from the cache).
_WARMUP_ROWS = 2048
# Faiss's k-means complains on stderr when it has fewer training points than it likes.
_KMEANS_WARNING = re.compile(r"WARNING clustering (\d+) points to (\d+) centroids: please provide at least "
                             r"(\d+) training points")


@dataclass
class Row:
    """One method at one bit width."""
    method: str
    bits: int
    bytes_per_vector: int
    build_s: float
    qps: float
    recall10: float
    r1_at: dict[int, float]
    describe: str


@dataclass
class Report:
    dataset: str
    n: int
    dim: int
    queries: int
    metric: str
    distance: str
    bits: list[int]
    methods: list[str]
    threads: int
    seed: int
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    date: str = ""
    command: str = ""


def check_methods(baselines) -> list[str]:
    """["turboann", *baselines] after checking every name is a known method (ValueError naming the unknown)."""
    unknown = [name for name in baselines if name not in ev.METHODS or name == "turboann"]
    if unknown:
        known = ", ".join(name for name in ev.METHODS if name != "turboann")
        raise ValueError(f"unknown baseline {unknown[0]!r}; choose from {known}")
    return ["turboann"] + [name for name in dict.fromkeys(baselines)]


def run_report(data: Dataset, bits, baselines=DEFAULT_BASELINES, *, threads: int = 1, seed: int = 0,
               on_note: Callable[[str], None] | None = None,
               on_row: Callable[[int, int, str], None] | None = None) -> Report:
    """Measure turboann and `baselines` (names of `turboann.eval.METHODS`) at each of `bits` on `data`.

    A baseline whose library is missing, or that cannot serve a bit width or
    the metric, is skipped with a one-line note (also passed to on_note as it
    happens). on_row(done, total, line) follows every (method, bits) pair,
    measured or skipped: a progress bar's hook; line describes the row.
    threads: for every library (see `turboann.eval.set_num_threads`).
    """
    bits = [_validate.integer("bits", b, low=1, high=8) for b in bits]
    methods = check_methods(baselines)
    threads = _validate.integer("threads", threads, low=1)
    say = on_note or (lambda message: None)
    ev.set_num_threads(threads)
    report = Report(dataset=data.name, n=data.train.shape[0], dim=data.train.shape[1], queries=data.test.shape[0],
                    metric=data.metric, distance=data.distance, bits=bits, methods=methods, threads=threads,
                    seed=seed, machine=_machine.machine_info(), date=time.strftime("%Y-%m-%d %H:%M %Z"))
    if data.neighbors.shape[1] < K:
        raise ValueError(f"the dataset's ground truth must hold at least {K} neighbours per query, "
                         f"got {data.neighbors.shape[1]}")
    missing: set[str] = set()
    unavailable: dict[tuple[str, str], list[int]] = {}   # (method, reason) -> bit widths skipped
    printed: dict[str, list[str]] = {}   # method -> what its libraries printed or warned, in order
    total, done = len(methods) * len(bits), 0
    for name in methods:
        for b in bits:
            done += 1
            if name in missing:
                (on_row or (lambda *a: None))(done, total, f"{name} {b} bits: skipped")
                continue
            line = f"{name} {b} bits: skipped"
            try:
                with _library_output() as output:
                    row = measure(data, name, b, seed)
                report.rows.append(row)
                line = (f"{name:<13} {b} bits: {row.bytes_per_vector} B/vector, recall 10@10 {row.recall10:.4f}, "
                        f"build {format_seconds(row.build_s)}, {row.qps:,.0f} QPS")
            except ev.MethodUnavailable as exc:
                if (name, str(exc)) not in unavailable:
                    say(f"skipped {name} at {b} bits: {exc}")
                unavailable.setdefault((name, str(exc)), []).append(b)
            except ImportError as exc:
                missing.add(name)
                report.notes.append(f"skipped {name}: {exc}")
                say(report.notes[-1])
            printed.setdefault(name, []).extend(output)
            if on_row is not None:
                on_row(done, total, line)
    report.notes += [f"skipped {name} at {', '.join(map(str, b))} bits: {reason}"
                     for (name, reason), b in unavailable.items()]
    report.notes += [note for name in methods for note in _output_notes(name, printed.get(name, []))]
    return report


def format_seconds(seconds: float) -> str:
    """"1.23 s", or milliseconds below 0.1 s, where two decimals of seconds say little or round to
    "0.00 s" (turboann builds the embedded set in a few ms)."""
    if seconds >= 0.1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.2f} ms" if seconds < 0.001 else f"{seconds * 1000:.1f} ms"


@contextlib.contextmanager
def _library_output():
    """Capture what runs inside: file descriptor 2 (where Faiss's C++ prints) and Python warnings.

    Yields a list, filled on exit with the captured lines and warning messages.
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += [line for line in sink.read().decode(errors="replace").splitlines() if line.strip()]
            lines += [f"{w.category.__name__}: {w.message}" for w in caught]


def _output_notes(method: str, lines: list[str]) -> list[str]:
    """One note for Faiss's k-means warnings (the fewest points trained on, and what it asked for),
    then each other distinct line a method's libraries printed."""
    notes, kmeans, seen = [], [], set()
    for line in lines:
        match = _KMEANS_WARNING.search(line)
        if match:
            kmeans.append(tuple(int(g) for g in match.groups()))
        elif line not in seen:
            seen.add(line)
            notes.append(f"{method} printed: {line.strip()}")
    if kmeans:
        points, centroids, wanted = min(kmeans)
        notes.insert(0, f"{method}: its k-means codebooks trained on few points ({len(kmeans)} Faiss warnings "
                        f"silenced; as few as {points:,} points for {centroids:,} centroids, where Faiss asks "
                        f"for {wanted:,}), so its recall may be below what a larger training set gives")
    return notes


def measure(data: Dataset, name: str, bits: int, seed: int) -> Row:
    """Build method `name` at `bits` on data.train and measure it on data.test."""
    dim = data.train.shape[1]
    if name == "turboann":
        warm = ev.make_method(name, dim, bits, data.metric, seed=seed)
        warm.add(data.train[:_WARMUP_ROWS])
        warm.search(data.test[:8], max(R1_AT))
        del warm
    method = ev.make_method(name, dim, bits, data.metric, seed=seed)
    t0 = time.perf_counter()
    method.add(data.train)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, ids = method.search(data.test, K)
    search_s = time.perf_counter() - t0
    found = ev.true_distances(data.train, data.test, ids, data.distance)
    recall10 = ev.mean_knn_recall(data.distances, found, K)
    _, ids64 = method.search(data.test, max(R1_AT))
    r1_at = {k: ev.recall_at(ids64, data.neighbors, k) for k in R1_AT}
    return Row(method=name, bits=bits, bytes_per_vector=method.code_bytes, build_s=build_s,
               qps=data.test.shape[0] / search_s, recall10=recall10, r1_at=r1_at, describe=method.describe())


# -- tables ------------------------------------------------------------------------------------------

def _columns() -> list[tuple[str, Callable[[Row], str]]]:
    cols = [("method", lambda r: r.method), ("bits", lambda r: str(r.bits)),
            ("bytes/vector", lambda r: str(r.bytes_per_vector)), ("build", lambda r: format_seconds(r.build_s)),
            ("QPS", lambda r: f"{r.qps:,.0f}"), ("recall 10@10", lambda r: f"{r.recall10:.4f}")]
    cols += [(f"R@1@{k}", lambda r, k=k: f"{r.r1_at[k]:.3f}") for k in R1_AT]
    return cols


def _cells(report: Report) -> tuple[list[str], list[list[str]]]:
    cols = _columns()
    rows = sorted(report.rows, key=lambda r: (r.bits, report.methods.index(r.method)))
    return [c[0] for c in cols], [[fmt(r) for _, fmt in cols] for r in rows]


def text_table(report: Report) -> str:
    """Fixed-width table for the terminal: first column left-aligned, the others right-aligned."""
    head, rows = _cells(report)
    widths = [max(len(x) for x in column) for column in zip(head, *rows)]
    lines = [" ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [head] + rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown_table(report: Report) -> str:
    head, rows = _cells(report)
    align = ["---"] + ["---:"] * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary(report: Report) -> str:
    """One line: dataset, shape, metric, threads, machine."""
    m = report.machine
    return (f"{report.dataset}: {report.n:,} vectors x {report.dim} dims, {report.queries:,} queries, "
            f"metric {report.metric}; {report.threads} thread(s) on {m.get('cpu_model')} "
            f"({m.get('cores')} cores); {report.date}")


def markdown(report: Report) -> str:
    lines = [f"# turboann report: {report.dataset}", "", summary(report), ""]
    if report.command:
        lines += [f"Made by `{report.command}`.", ""]
    lines += [markdown_table(report), "",
              "bytes/vector: codes plus per-vector factors. build: adding all vectors, training or "
              "calibration included. QPS: one batch search of all queries, k=10, with the thread count "
              "above. recall 10@10: ann-benchmarks k-NN recall (epsilon 1e-3) of that search. R@1@k: "
              "how often the true nearest neighbour is among the first k results.", "",
              "![recall vs bits](recall_vs_bits.png)", "", "![R@1@k](recall_at_k.png)", "",
              "![recall vs QPS](recall_vs_qps.png)", "", "![recall vs bytes](recall_vs_bytes.png)", ""]
    if report.notes:
        lines += ["Notes:", ""] + [f"- {note}" for note in report.notes] + [""]
    lines += ["Methods:", ""] + sorted({f"- {r.method}: {r.describe}" for r in report.rows}) + [""]
    return "\n".join(lines)


def csv_text(report: Report) -> str:
    out = _io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "bits", "bytes_per_vector", "build_s", "qps", "recall10"]
                    + [f"r1_at_{k}" for k in R1_AT] + ["describe"])
    for r in sorted(report.rows, key=lambda r: (r.bits, report.methods.index(r.method))):
        writer.writerow([r.method, r.bits, r.bytes_per_vector, f"{r.build_s:.4f}", f"{r.qps:.2f}",
                         f"{r.recall10:.6f}"] + [f"{r.r1_at[k]:.6f}" for k in R1_AT] + [r.describe])
    return out.getvalue()


# -- plots ---------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _color(i: int) -> str:
    """The same colour for a method in every plot and panel, whichever methods are missing."""
    return f"C{i % 10}"


def _method_lines(report: Report):
    """(colour index, method, its rows by bits) for every method with rows: one plotted line each."""
    for i, name in enumerate(report.methods):
        rows = sorted((r for r in report.rows if r.method == name), key=lambda r: r.bits)
        if rows:
            yield i, name, rows


def plot_recall_vs_bits(report: Report, path) -> None:
    """recall 10@10 against bits per coordinate, one line per method; the legend gives bytes/vector."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, name, rows in _method_lines(report):
        sizes = "/".join(str(r.bytes_per_vector) for r in rows)
        ax.plot([r.bits for r in rows], [r.recall10 for r in rows], marker="o", color=_color(i),
                linewidth=2.5 if name == "turboann" else 1.5, label=f"{name} ({sizes} B)")
    ax.set_xticks(report.bits)
    ax.set_xlabel("bits per coordinate")
    ax.set_ylabel("recall 10@10 (ann-benchmarks)")
    ax.set_title(f"Recall vs bits: {report.dataset}\n{report.n:,} vectors x {report.dim}, "
                 f"{report.queries:,} queries, {report.metric}")
    ax.grid(alpha=0.3)
    ax.legend(title="method (bytes per vector at each bit width)", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_recall_at_k(report: Report, path) -> None:
    """R@1@k against k, one panel per bit width, one line per method."""
    plt = _pyplot()
    bits = [b for b in report.bits if any(r.bits == b for r in report.rows)] or report.bits
    fig, axes = plt.subplots(1, len(bits), figsize=(3.6 * len(bits) + 1, 4.2), sharey=True, squeeze=False)
    for ax, b in zip(axes[0], bits):
        for i, name in enumerate(report.methods):
            row = next((r for r in report.rows if r.method == name and r.bits == b), None)
            if row is not None:
                ax.plot(R1_AT, [row.r1_at[k] for k in R1_AT], marker="o", label=name, color=_color(i),
                        linewidth=2.5 if name == "turboann" else 1.5)
        ax.set_xscale("log", base=2)
        ax.set_xticks(R1_AT, [str(k) for k in R1_AT])
        ax.set_title(f"{b} bit{'s' if b > 1 else ''} per coordinate")
        ax.set_xlabel("k (results read)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("R@1@k: true nearest neighbour in the first k")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:   # a method missing at the first bit width still gets its legend entry
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, title="method", loc="center right", fontsize=8)
    fig.suptitle(f"R@1@k: {report.dataset} ({report.n:,} x {report.dim}, {report.metric})")
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _lines_over_bits(report: Report, path, x, y, *, xlabel: str, ylabel: str, title: str, log_x: bool = False,
                     log_y: bool = False) -> None:
    """One line a method through its bit widths (each point labelled with its bits), x(row) against y(row)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, name, rows in _method_lines(report):
        xs, ys = [x(r) for r in rows], [y(r) for r in rows]
        ax.plot(xs, ys, marker="o", color=_color(i), linewidth=2.5 if name == "turboann" else 1.5, label=name)
        for r, px, py in zip(rows, xs, ys):
            ax.annotate(f"{r.bits}b", (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=_color(i))
    if log_x:
        from matplotlib.ticker import ScalarFormatter

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())   # 64, 128, 256 rather than 2^6, 2^7, 2^8
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}: {report.dataset}\n{report.n:,} vectors x {report.dim}, {report.queries:,} queries, "
                 f"{report.metric}, {report.threads} thread(s)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="method (points: bits per coordinate)", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_recall_vs_qps(report: Report, path) -> None:
    """Queries per second (log) against recall 10@10: the speed-accuracy picture; up and right is better."""
    _lines_over_bits(report, path, lambda r: r.recall10, lambda r: r.qps, xlabel="recall 10@10 (ann-benchmarks)",
                     ylabel="queries per second (one batch, k=10; log scale)", title="Recall vs QPS", log_y=True)


def plot_recall_vs_bytes(report: Report, path) -> None:
    """recall 10@10 against bytes per vector (log 2): what each byte buys; up and left is better."""
    _lines_over_bits(report, path, lambda r: r.bytes_per_vector, lambda r: r.recall10,
                     xlabel="bytes per vector (codes + factors; log scale)", ylabel="recall 10@10 (ann-benchmarks)",
                     title="Recall vs bytes", log_x=True)


# -- files ------------------------------------------------------------------------------------------------

def _write_plot(plot, report: Report, path: Path) -> None:
    """Draw `plot` of report into `path` atomically; through an open file, which matplotlib writes as PNG
    whatever the temp name ends with."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        plot(report, f)


def write_report(report: Report, directory) -> dict[str, Path]:
    """Write report.md, report.csv, report.json and the four PNG plots into `directory` (created if needed).

    Each file is written to a temp name and renamed. Returns {kind: path}.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": directory / "report.md", "csv": directory / "report.csv",
             "json": directory / "report.json", "recall_vs_bits": directory / "recall_vs_bits.png",
             "recall_at_k": directory / "recall_at_k.png", "recall_vs_qps": directory / "recall_vs_qps.png",
             "recall_vs_bytes": directory / "recall_vs_bytes.png"}
    write_text(paths["markdown"], markdown(report))
    write_text(paths["csv"], csv_text(report))
    write_text(paths["json"], json.dumps(asdict(report), indent=1, default=_jsonable) + "\n")
    _write_plot(plot_recall_vs_bits, report, paths["recall_vs_bits"])
    _write_plot(plot_recall_at_k, report, paths["recall_at_k"])
    _write_plot(plot_recall_vs_qps, report, paths["recall_vs_qps"])
    _write_plot(plot_recall_vs_bytes, report, paths["recall_vs_bytes"])
    return paths


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
