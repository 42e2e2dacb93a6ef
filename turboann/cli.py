"""The `turboann` command line: build, search, report, datasets, warmup.

Thin: every command parses its options, calls the library (Index, io,
datasets, report, eval) and prints. Every error is one line on stderr,
``turboann: error: ...``, with a non-zero exit; set TURBOANN_DEBUG=1 to see
the traceback of an unexpected one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from . import datasets as ds

_DEBUG_ENV = "TURBOANN_DEBUG"
# Builds of more rows than this add in chunks of this size behind a progress bar.
BUILD_CHUNK = 65_536


# -- one-line errors ----------------------------------------------------------------------------------

def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class _Group(click.Group):
    """A click group whose every failure is one line on stderr and a non-zero exit, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(exc.format_message() + hint, exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (ValueError, TypeError, OSError, ImportError, MemoryError) as exc:
            if os.environ.get(_DEBUG_ENV):
                raise
            _fail(_describe(exc), 1)
        except Exception as exc:  # a bug: still one line, with a way to see more
            if os.environ.get(_DEBUG_ENV):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set {_DEBUG_ENV}=1 for the traceback)", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return "out of memory"
    return str(exc) or type(exc).__name__


def _fail(message: str, code: int):
    click.echo(f"turboann: error: {_one_line(message)}", err=True)
    sys.exit(code or 1)


def _note(message: str) -> None:
    click.echo(f"turboann: {_one_line(message)}", err=True)


# -- option types ----------------------------------------------------------------------------------------

class _IntList(click.ParamType):
    """Comma-separated integers within [low, high], e.g. "1,2,3,4"."""
    name = "LIST"

    def __init__(self, low: int, high: int | None):
        self.low, self.high = low, (1 << 62) if high is None else high

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            items = [int(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"expected comma-separated integers such as 1,2,3,4, got {value!r}", param, ctx)
        bad = [v for v in items if not self.low <= v <= self.high]
        if not items or bad:
            self.fail(f"expected integers in {self.low}..{self.high}, got {value!r}", param, ctx)
        return list(dict.fromkeys(items))


class _NameList(click.ParamType):
    name = "NAMES"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        return [v.strip() for v in str(value).split(",") if v.strip()]


_EXISTING = click.Path(dir_okay=False, path_type=Path)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="turboann", message="%(prog)s %(version)s")
def cli():
    """turboann: training-free compressed vector search (TurboQuant codes).

    Build and search indexes on ann-benchmarks HDF5 files, and report recall
    against bits next to Faiss and turbovec. `turboann report` with no file
    runs on the small real dataset embedded in the checkout.
    """


# -- build ------------------------------------------------------------------------------------------------

def _load(path: Path, queries: int | None = None) -> ds.Dataset:
    return ds.load_ann_benchmarks(path, queries=queries)


def _centre(x: np.ndarray, metric: str):
    """The centre Index.add(x) would compute in one call, for building in chunks.

    With center="auto" the index would otherwise take the centre of the first
    chunk only, and the index would depend on the chunk size.
    """
    from .index import MIN_CENTER_SAMPLE, estimate_centre

    if x.shape[0] < MIN_CENTER_SAMPLE:
        return "auto"
    return estimate_centre(np.ascontiguousarray(x, dtype=np.float32), metric)


def make_index(dim: int, metric: str, options: dict, train: np.ndarray):
    """An empty index for `options` (bits, seed, variant, keep_vectors, compact; nlist > 0: a trained IVFIndex)."""
    from .index import Index
    from .ivf import IVFIndex

    common = {"bits": options["bits"], "metric": metric, "seed": options["seed"], "variant": options["variant"],
              "keep_vectors": options.get("keep_vectors", False)}
    if options.get("nlist"):
        index = IVFIndex(dim, nlist=options["nlist"], **common)
        click.echo(f"training {options['nlist']:,} coarse centroids (Faiss k-means) ...", err=True)
        index.train(train)
        return index
    center = "auto" if train.shape[0] <= BUILD_CHUNK else _centre(train, metric)
    index = Index(dim, center=center, compact=options.get("compact", False), **common)
    if not isinstance(center, str) and index.estimator == "translate":
        index.fit_spread(train)   # as one add of train would, not the first chunk's
    return index


def add_with_progress(index, x: np.ndarray) -> None:
    """index.add(x), in chunks behind a progress bar (on stderr) when x is long."""
    if x.shape[0] <= BUILD_CHUNK:
        index.add(x)
        return
    with click.progressbar(length=x.shape[0], label="adding", file=sys.stderr, show_pos=True) as bar:
        for start in range(0, x.shape[0], BUILD_CHUNK):
            chunk = x[start:start + BUILD_CHUNK]
            index.add(chunk)
            bar.update(chunk.shape[0])


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000


@cli.command()
@click.argument("data", type=_EXISTING)
@click.argument("index_path", metavar="INDEX", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bits", type=click.IntRange(1, 8), default=4, show_default=True, help="bits per coordinate")
@click.option("--metric", type=click.Choice(["auto", "ip", "cosine", "l2"]), default="auto", show_default=True,
              help="auto: the file's distance (angular -> cosine, euclidean -> l2)")
@click.option("--seed", type=click.IntRange(0, None), default=0, show_default=True, help="rotation seed")
@click.option("--variant", type=click.Choice(["mse", "prod"]), default="mse", show_default=True,
              help="prod adds a 1-bit QJL sketch of the residual (unbiased inner products)")
@click.option("--nlist", type=click.IntRange(1, None), default=None,
              help="build an IVF index with this many coarse lists (needs faiss-cpu) [default: flat]")
@click.option("--keep-vectors", is_flag=True, help="keep float32 vectors in the index so search can --rerank")
@click.option("--compact", is_flag=True,
              help="codes and factors in dim * bits / 8 bytes a vector, a PQ code's size (flat index, bits 2-4)")
def build(data, index_path, bits, metric, seed, variant, nlist, keep_vectors, compact):
    """Build an index of DATA's train vectors and save it to INDEX."""
    if variant == "prod" and bits < 2:
        raise click.BadParameter("variant prod spends one bit on the residual sketch: it needs --bits >= 2",
                                 param_hint="'--bits'")
    if compact and nlist is not None:
        raise click.BadParameter("compact codes are for flat indexes: drop --nlist", param_hint="'--compact'")
    dataset = _load(data, queries=1)
    metric = dataset.metric if metric == "auto" else metric
    if nlist is not None and nlist > dataset.train.shape[0]:
        raise click.BadParameter(f"at most the {dataset.train.shape[0]:,} train vectors, got {nlist}",
                                 param_hint="'--nlist'")
    options = {"bits": bits, "seed": seed, "variant": variant, "nlist": nlist, "keep_vectors": keep_vectors,
               "compact": compact}
    t0 = time.perf_counter()
    index = make_index(dataset.train.shape[1], metric, options, dataset.train)
    add_with_progress(index, dataset.train)
    build_s = time.perf_counter() - t0
    index.save(index_path)
    n = len(index)
    click.echo(f"built {index_path}: {n:,} vectors, dim {index.dim}, {index.bits} bits, metric {metric}, "
               f"variant {variant}")
    click.echo(f"  {index.code_bytes} bytes/vector, {_size(index.nbytes)} in memory, "
               f"{_size(os.path.getsize(index_path))} on disk")
    click.echo(f"  build {build_s:.2f} s, {n / build_s:,.0f} vectors/s")


# -- search -----------------------------------------------------------------------------------------------

def _powers_up_to(k: int) -> list[int]:
    return sorted({2 ** i for i in range(int(math.log2(k)) + 1)} | {k})


def _load_index(path: Path, mmap: bool = False):
    from .io import load

    return load(path, mmap=mmap)


@cli.command()
@click.argument("index_path", metavar="INDEX", type=_EXISTING)
@click.argument("data", type=_EXISTING)
@click.option("-k", "k", type=click.IntRange(1, None), default=10, show_default=True, help="neighbours per query")
@click.option("--queries", type=click.IntRange(1, None), default=None, help="first N test queries [default: all]")
@click.option("--threads", type=click.IntRange(1, None), default=None,
              help="search threads [default: all cores, NUMBA_NUM_THREADS]")
@click.option("--latency-queries", type=click.IntRange(0, None), default=200, show_default=True,
              help="queries searched one at a time for the latency percentiles (0: skip)")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write results, settings and machine as JSON")
@click.option("--nprobe", type=click.IntRange(1, None), default=None,
              help="IVF lists scanned per query [default: the index's default]")
@click.option("--rerank", type=click.IntRange(1, None), default=None,
              help="score this many candidates exactly (index built with --keep-vectors)")
@click.option("--sweep", type=_IntList(1, None), default=None,
              help="IVF: print recall and QPS for each of these nprobe values, e.g. 1,4,16,64")
@click.option("--mmap", is_flag=True, help="map the index file instead of reading it (read-only; pages load as "
              "searches touch them)")
@click.option("--exact", is_flag=True, help="bound the fast-scan estimates by their worst case, so the top k is "
              "the codes' exact top k always (default: a six-sigma bound)")
def search(index_path, data, k, queries, threads, latency_queries, output, nprobe, rerank, sweep, mmap, exact):
    """Search INDEX with DATA's test queries; print recall, R@1@k, QPS and latency."""
    import numba

    from . import _machine
    from . import eval as ev

    index = _load_index(index_path, mmap=mmap)
    dataset = _load(data, queries=queries)
    if dataset.test.shape[0] == 0:   # recall would be the mean of nothing: nan, with RuntimeWarnings
        raise click.ClickException(f"{data} has no test queries to search with")
    if dataset.train.shape[1] != index.dim:
        raise click.ClickException(f"dimension mismatch: index {index_path} has dim {index.dim}, "
                                   f"{data} has dim {dataset.train.shape[1]}")
    if len(index) != dataset.train.shape[0]:
        _note(f"the index holds {len(index):,} vectors but {data} has {dataset.train.shape[0]:,}: "
              f"recall is measured against the file's ground truth")
    if index.metric != dataset.metric:
        _note(f"the index ranks by {index.metric} but {data} is {dataset.distance}: recall uses {dataset.distance}")
    gt_k = dataset.neighbors.shape[1]
    if k > gt_k:
        raise click.BadParameter(f"{data} has ground truth for {gt_k} neighbours, got -k {k}", param_hint="'-k'")
    if threads is not None and threads > numba.config.NUMBA_NUM_THREADS:
        raise click.BadParameter(f"at most {numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS), got {threads}",
                                 param_hint="'--threads'")
    nthreads = threads or numba.get_num_threads()
    is_ivf = hasattr(index, "nlist")
    if (nprobe is not None or sweep) and not is_ivf:
        raise click.BadParameter(f"{index_path} is a flat index: --nprobe and --sweep apply to IVF indexes "
                                 f"(build with --nlist)", param_hint="'--nprobe'")
    search_kwargs = {"threads": nthreads, "exact": exact}
    if nprobe is not None:
        search_kwargs["nprobe"] = nprobe
    if rerank is not None:
        search_kwargs["rerank"] = rerank
    q = dataset.test
    index.search(q[:2], k, **search_kwargs)   # untimed: compiles or loads the kernels

    t0 = time.perf_counter()
    _, ids = index.search(q, k, **search_kwargs)
    batch_s = time.perf_counter() - t0
    found = ev.true_distances(dataset.train, q, ids, dataset.distance)
    recall = ev.mean_knn_recall(dataset.distances, found, k)
    r1 = {j: ev.recall_at(ids, dataset.neighbors, j) for j in _powers_up_to(k)}
    latencies = []
    for i in range(min(latency_queries, q.shape[0])):
        t1 = time.perf_counter()
        index.search(q[i:i + 1], k, **search_kwargs)
        latencies.append(time.perf_counter() - t1)
    qps = q.shape[0] / batch_s
    sweep_rows = _sweep(index, dataset, q, k, sweep, search_kwargs) if sweep else []

    click.echo(f"{index_path}: {len(index):,} vectors, dim {index.dim}, {index.bits} bits, {index.metric}; "
               f"{q.shape[0]:,} queries from {data}, k={k}, {nthreads} thread(s)")
    click.echo(f"  recall {k}@{k} (ann-benchmarks): {recall:.4f}")
    click.echo("  " + "  ".join(f"R@1@{j} {v:.3f}" for j, v in r1.items()))
    click.echo(f"  QPS (batch): {qps:,.0f}")
    result = {"recall": recall, "r1_at": r1, "qps": qps, "batch_seconds": batch_s}
    if sweep_rows:
        click.echo(f"  {'nprobe':>7} {'recall':>8} {'QPS':>9}")
        for row in sweep_rows:
            click.echo(f"  {row['nprobe']:>7} {row['recall']:>8.4f} {row['qps']:>9,.0f}")
        result["sweep"] = sweep_rows
    if latencies:
        p50, p99 = (float(np.percentile(latencies, p)) * 1e3 for p in (50, 99))
        click.echo(f"  latency (single query, {len(latencies)} queries): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        result.update(latency_ms_p50=p50, latency_ms_p99=p99, latency_queries=len(latencies))
    if output is not None:
        settings = {"index": str(index_path), "index_settings": index._settings(), "n": len(index),
                    "code_bytes": index.code_bytes, "data": str(data), "dataset": dataset.name,
                    "distance": dataset.distance, "queries": q.shape[0], "k": k, "threads": nthreads,
                    "epsilon": 1e-3, "mmap": mmap, **{key: v for key, v in search_kwargs.items() if key != "threads"}}
        doc = {"settings": settings, "machine": _machine.machine_info(), "results": result,
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write_json(output, doc)
        click.echo(f"  wrote {output}")


def _sweep(index, dataset, q, k: int, nprobes, search_kwargs: dict) -> list[dict]:
    """Recall k@k and batch QPS of an IVF index at each nprobe (larger than nlist is an error)."""
    from . import eval as ev

    rows = []
    for p in nprobes:
        kwargs = {**search_kwargs, "nprobe": p}
        t0 = time.perf_counter()
        _, ids = index.search(q, k, **kwargs)
        seconds = time.perf_counter() - t0
        found = ev.true_distances(dataset.train, q, ids, dataset.distance)
        rows.append({"nprobe": p, "recall": ev.mean_knn_recall(dataset.distances, found, k),
                     "qps": q.shape[0] / seconds})
    return rows


def _write_json(path: Path, obj) -> None:
    from ._files import write_text

    write_text(path, json.dumps(obj, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n")


# -- report -----------------------------------------------------------------------------------------------

@cli.command()
@click.argument("data", type=_EXISTING, required=False)
@click.option("--bits", type=_IntList(1, 8), default="1,2,3,4", show_default=True, help="bit widths")
@click.option("--baselines", type=_NameList(), default=",".join(("faiss-pq", "faiss-pqfs", "faiss-rabitq",
                                                                   "faiss-tq", "turbovec")),
              show_default=True, help="comparison methods, comma-separated ('' for none)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="output directory [default: ./report-DATASET]")
@click.option("--queries", type=click.IntRange(1, None), default=None, help="first N test queries [default: all]")
@click.option("--threads", type=click.IntRange(1, None), default=1, show_default=True,
              help="threads for every method's build and search")
@click.option("--seed", type=click.IntRange(0, None), default=0, show_default=True)
def report(data, bits, baselines, out_dir, queries, threads, seed):
    """Recall vs bits of turboann and baselines on DATA, as tables and plots.

    DATA defaults to the embedded wordnet-minilm-384-angular-10k subset. Writes
    report.md, report.csv, report.json and four plots: recall_vs_bits.png,
    recall_at_k.png, recall_vs_qps.png and recall_vs_bytes.png.
    """
    from . import report as rp

    try:
        rp.check_methods(baselines)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--baselines'") from None
    given = data is not None
    if not given:
        data = ds.embedded_path()
        _note(f"no DATA given: using the embedded dataset {data.name}")
    dataset = _load(data, queries=queries)
    out_dir = out_dir or Path(f"report-{dataset.name}")
    methods = rp.check_methods(baselines)
    # A bar over the (method, bits) rows on stderr; skips and library output reach the notes printed below.
    with click.progressbar(length=len(methods) * len(bits), label="measuring", file=sys.stderr, show_pos=True,
                           item_show_func=lambda line: line) as bar:
        def row_done(done, total, line):
            bar.update(done - bar.pos, " ".join(line.split()[:3]))

        result = rp.run_report(dataset, bits, baselines, threads=threads, seed=seed, on_row=row_done)
    result.command = " ".join(["turboann report", *([str(data)] if given else []), "--bits",
                               ",".join(map(str, bits)), "--baselines", ",".join(baselines) or "''",
                               "--threads", str(threads), "--seed", str(seed),
                               *(["--queries", str(queries)] if queries else [])])
    paths = rp.write_report(result, out_dir)
    click.echo(rp.summary(result))
    click.echo(rp.text_table(result))
    for line in result.notes:
        click.echo(line)
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


# -- datasets ---------------------------------------------------------------------------------------------

@cli.group()
def datasets():
    """Standard ann-benchmarks files: list, fetch, inspect, convert."""


@datasets.command("list")
def datasets_list():
    """The registry of standard ann-benchmarks files, and which are in the cache."""
    cache = ds.cache_dir()
    click.echo(f"{'name':<30} {'dim':>5} {'distance':<9} {'train':>10} {'test':>7} {'size':>9}  cached")
    for e in ds.REGISTRY.values():
        cached = "yes" if (cache / f"{e.name}.hdf5").is_file() else ""
        click.echo(f"{e.name:<30} {e.dim:>5} {e.distance:<9} {e.n_train:>10,} {e.n_test:>7,} "
                   f"{_size(e.size_bytes):>9}  {cached}")
    click.echo(f"cache: {cache} (set TURBOANN_DATA to change); files from https://ann-benchmarks.com")


@datasets.command("fetch")
@click.argument("name")
@click.option("--url", default=None, help="download from here instead of the registry's URL")
@click.option("--dir", "dest_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="download directory [default: $TURBOANN_DATA or ~/.cache/turboann]")
def datasets_fetch(name, url, dest_dir):
    """Download NAME (see `turboann datasets list`) into the cache, resuming a partial download."""
    with contextlib.ExitStack() as stack:
        bar = None

        def progress(done, total):
            nonlocal bar
            if bar is None:   # the size is known once the server answers
                bar = stack.enter_context(click.progressbar(length=total or 0, label=f"fetching {name}",
                                                            file=sys.stderr, show_pos=True))
            bar.update(done - bar.pos)

        path = ds.fetch(name, url=url, dest_dir=dest_dir, on_progress=progress)
    click.echo(f"{path} ({_size(path.stat().st_size)})")


@datasets.command("info")
@click.argument("file", type=_EXISTING, required=False)
def datasets_info(file):
    """Check FILE's ann-benchmarks layout and describe it (default: the embedded dataset)."""
    info = ds.inspect(file if file is not None else ds.embedded_path())
    click.echo(f"{info['path']}: ann-benchmarks file, {_size(info['bytes'])}")
    click.echo(f"  train     {info['n']:,} x {info['dim']} ({info['dtypes']['train']})")
    click.echo(f"  test      {info['queries']:,} x {info['dim']} ({info['dtypes']['test']})")
    click.echo(f"  neighbors {info['queries']:,} x {info['k']} ({info['dtypes']['neighbors']}), "
               f"distances ({info['dtypes']['distances']})")
    click.echo(f"  distance  {info['distance']} (turboann metric {info['metric']})")
    for key, value in info["attrs"].items():
        if key not in ("distance", "dimension", "point_type"):
            click.echo(f"  {key}: {value}")


@datasets.command("convert")
@click.argument("train", type=_EXISTING)
@click.argument("test", type=_EXISTING)
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--distance", type=click.Choice(["angular", "euclidean"]), required=True)
@click.option("--ground-truth", type=_EXISTING, default=None,
              help=".ivecs/.npy true neighbour ids; computed exactly when omitted")
@click.option("-k", "k", type=click.IntRange(1, None), default=100, show_default=True,
              help="neighbours kept in the ground truth")
def datasets_convert(train, test, out, distance, ground_truth, k):
    """Write TRAIN and TEST (.fvecs, .bvecs or .npy) as the ann-benchmarks HDF5 file OUT."""
    info = ds.convert(train, test, out, distance, ground_truth=ground_truth, k=k, on_progress=_note)
    click.echo(f"wrote {out}: train {info['n']:,} x {info['dim']}, test {info['queries']:,}, "
               f"{info['k']} neighbours, {info['distance']}")


@cli.command()
@click.option("--bits", type=_IntList(1, 8), default="1,2,3,4,5,6,7,8", show_default=True, help="bit widths")
@click.option("--kinds", type=click.Choice(["all", "flat", "ivf"]), default="all", show_default=True,
              help="Index (flat), IVFIndex (ivf) or both")
@click.option("--jobs", type=click.IntRange(1, None), default=None,
              help="processes compiling at once [default: the CPUs this process may use]")
def warmup(bits, kinds, jobs):
    """Compile the search and add kernels into Numba's cache, once per machine.

    Without it the first add and search of each new kind of index compile
    them (minutes in all); after it, a new process starts in about a second.
    """
    from . import warmup as _warmup
    chosen = _warmup.KINDS if kinds == "all" else (kinds,)
    total = _warmup.warmup(bits=bits, kinds=chosen, jobs=jobs, report=_note)
    click.echo(f"compiled the kernels of {', '.join(chosen)} at bits {','.join(map(str, bits))} in {total:.0f} s")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="turboann")


if __name__ == "__main__":
    main()
