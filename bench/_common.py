"""Helpers shared by the bench scripts: machine facts, timing, tables, JSON."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Measure the turboann of this checkout, not whichever one is installed.
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

from turboann import _files, _machine  # noqa: E402
# shared/ sits beside the repository (on developer machines and in CI alike).
DATASETS = REPO.parent / "shared" / "datasets"


def run_child(script: str, spec: dict, argv: list[str], rayon_threads: int) -> dict:
    """The JSON a bench script prints last when run again as `script --worker SPEC ARGV...` in a fresh
    process whose rayon pool (turbovec's) has `rayon_threads`: the pool takes its size once a process."""
    cmd = [sys.executable, script, "--worker", json.dumps(spec), *argv]
    done = subprocess.run(cmd, env=dict(os.environ, RAYON_NUM_THREADS=str(rayon_threads)),
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"child for {spec.get('method')} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def dataset_recall(ds, ids, k: int) -> float:
    """ann-benchmarks recall k@k of the found ids (nq, k) on an ann-benchmarks dataset."""
    from turboann import eval as ev
    return ev.mean_knn_recall(ds.distances, ev.true_distances(ds.train, ds.test, ids, ds.distance), k)


def csv_list(text: str, kind=str) -> list:
    """A comma-separated option as a list of `kind`, empty items dropped: "2,4" -> [2, 4]."""
    return [kind(v) for v in text.split(",") if v.strip()]


def git_revision() -> str | None:
    """Short commit of the repository, with "+dirty" when the work tree has changes."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")


def fair_blas() -> str | None:
    """Set OPENBLAS_CORETYPE, unless the environment does, to the newest OpenBLAS kernel family this CPU
    runs ("SkylakeX" with AVX-512, "Haswell" with AVX2); the value, or None. Call before numpy or
    Faiss loads: an OpenBLAS older than the CPU (Faiss's bundled one) otherwise runs its generic
    kernels, which makes the brute-force anchor several times slower than it is."""
    if "OPENBLAS_CORETYPE" in os.environ:
        return os.environ["OPENBLAS_CORETYPE"]
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return None
    core = "SkylakeX" if {"avx512f", "avx512bw", "avx512vl"} <= flags else "Haswell" if "avx2" in flags else None
    if core:
        os.environ["OPENBLAS_CORETYPE"] = core
    return core


def machine_info() -> dict:
    """`turboann._machine.machine_info()` plus the repository's git revision and the kernels turboann runs."""
    from turboann.kernels import _simd, _wide, dot

    kernels = {"fastscan": _simd.kernel_choice(), "dot": {3: "vbmi+vnni512", 2: "vnni512", 1: "vnni256",
                                                          0: "plain IR"}[dot.simd_level()],
               "vnni256": _wide.HAS_VNNI256}
    try:
        import threadpoolctl
        try:
            import faiss  # noqa: F401  (loads its bundled BLAS, so that it is listed too)
        except ImportError:
            pass
        blas = sorted({f"{i['internal_api']}:{i.get('architecture')}" for i in threadpoolctl.threadpool_info()
                       if i.get("user_api") == "blas"})
    except ImportError:
        blas = None
    return {**_machine.machine_info(), "turboann_git": git_revision(), "kernels": kernels, "blas": blas,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}


def timed(fn, repeat: int, budget_seconds: float = float("inf")) -> list[float]:
    """Wall seconds of `repeat` calls of fn(); stops early (after at least one call)
    once the calls so far took `budget_seconds` in total."""
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if sum(times) >= budget_seconds:
            break
    return times


def round_robin(jobs, repeat: int) -> list[list[float]]:
    """Wall seconds of `repeat` calls of each no-argument job, taken in turn over the jobs
    (job 0, 1, ..., then again) so that a change of machine load hits every job alike."""
    times = [[] for _ in jobs]
    for _ in range(repeat):
        for t, job in zip(times, jobs):
            t += timed(job, 1)
    return times


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(rows: list[dict], columns: list[tuple[str, str, int, str]]) -> str:
    """Fixed-width text table. columns: (key, header, width, format spec)."""
    head = " ".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (_, h, w, _) in enumerate(columns))
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = []
        for i, (key, _, width, spec) in enumerate(columns):
            text = fmt(row.get(key), spec)
            cells.append(f"{text:>{width}}" if i else f"{text:<{width}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write obj as indented JSON, atomically (temp, fsync, rename: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _files.write_text(path, json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finish_report(report: dict, path: str | os.PathLike) -> None:
    """Stamp the end time and load average on a bench report and write it."""
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["load_average_end"] = os.getloadavg()
    write_json(path, report)
