"""Does the fast Hadamard rotation quantize as well as a dense random rotation?

For each dim, rotate inputs that are hard for structured rotations, quantize
each rotated unit vector with the codebook at that dim, rotate back, and
compare with what a dense (Haar) rotation gives:

  basis   ±e_i, one nonzero coordinate
  sparse3 three random nonzero coordinates
  embed   a large common mean on a few "outlier" coordinates plus a dense
          part, low-rank spread and a little noise, like real embeddings

For a Haar rotation the expected distortion of ANY fixed unit vector u is
known, so dense needs no sampling noise: E||u - u_hat||^2 = d * coordinate_mse,
and for a query q, E<q, u - u_hat>^2 = c^2 A + (|q|^2 - c^2) (B - A) / (d - 1)
with c = <q, u>, A = E<y, e>^2, B = E|e|^2, e = y - Q(y), y uniform on the
sphere (A, B by Monte Carlo on the sphere, no rotation involved). The
Hadamard side is averaged over many seeds; a few dense seeds are measured
too, as a check of that expectation.

    python bench/rotation_distortion.py [--out PATH] [--dims 25,96,...] [--quick]

Prints the table and writes JSON (default bench/results/rotation_distortion.json).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's turboann
from turboann import codebook  # noqa: E402
from turboann.kernels.hadamard import hadamard_rotate  # noqa: E402
from turboann.rotation import Rotation, hadamard_round_count, hadamard_rounds, resolve_kind  # noqa: E402

DIMS = (25, 96, 100, 128, 200, 256, 384, 768, 960, 1536)
BITS = (2, 4)
SETS = ("basis", "sparse3", "embed")
TIMING_SHAPE = (116_659, 384)


def hard_inputs(name: str, d: int, n: int, rng: np.random.Generator):
    """Unit rows x (n, d) float32 of the named kind, and a query q_i for each x_i.

    For "embed" q_i is another draw from x_i's group (a near neighbour, the
    pairs whose inner products decide recall); for the sparse sets it is an
    independent draw. Each group of 8 "embed" rows has its own mean: many
    independent mean directions per seed, so the estimate is not one
    direction's luck.
    """
    def unit(v):
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.where(norms > 0, v / np.where(norms > 0, norms, 1.0), 1.0 / math.sqrt(d))
        return v.astype(np.float32)

    if name in ("basis", "sparse3"):
        nonzeros = 1 if name == "basis" else 3
        v = np.zeros((2 * n, d))
        for _ in range(nonzeros):
            idx = rng.integers(0, d, 2 * n)
            v[np.arange(2 * n), idx] += (rng.choice([-1.0, 1.0], 2 * n) if nonzeros == 1
                                         else rng.standard_normal(2 * n))
        v = unit(v)
        return v[:n], v[n:]
    if name != "embed":
        raise ValueError(f"unknown input set {name!r}")
    rank, group, outliers = 8, 8, min(4, d)
    means = rng.standard_normal((n // group + 1, d)) / math.sqrt(d)
    for g in range(means.shape[0]):
        means[g, rng.choice(d, outliers, replace=False)] += 3.0 * rng.standard_normal(outliers)
    spread = rng.standard_normal((rank, d)) / (math.sqrt(d) * np.arange(1, rank + 1)[:, None])
    owner = np.arange(n) // group

    def draw():
        return (means[owner] + 1.5 * rng.standard_normal((n, rank)) @ spread
                + 0.05 * rng.standard_normal((n, d)) / math.sqrt(d))
    return unit(draw()), unit(draw())


def quantize(y: np.ndarray, d: int, bits: int) -> np.ndarray:
    """Nearest centroid of every coordinate of rotated unit rows y (n, d): float64."""
    return codebook.centroids(d, bits)[np.searchsorted(codebook.boundaries(d, bits), y, side="right")]


def hadamard_apply(x: np.ndarray, d: int, seed: int, rounds: int, transpose=False) -> np.ndarray:
    r = hadamard_rounds(d, seed, rounds)
    if transpose:
        r = r.inverse()
    out = np.empty_like(x)
    hadamard_rotate(x, r.signs, r.perms, r.overlap_signs, transpose, out)
    return out


def distortion(kind: str, d: int, seed: int, rounds: int, x: np.ndarray, q: np.ndarray, bits: int):
    """Mean unit-vector MSE, and mean squared inner-product error <q_i, x_i - x_hat_i>^2."""
    if kind == "dense":
        rot = Rotation(d, "dense", seed)
        y = rot.apply(x)
        back = rot.apply_transpose(quantize(y, d, bits).astype(np.float32))
    else:
        y = hadamard_apply(x, d, seed, rounds)
        back = hadamard_apply(quantize(y, d, bits).astype(np.float32), d, seed, rounds, transpose=True)
    err = x.astype(np.float64) - back
    return float((err * err).sum(1).mean()), float(((q * err).sum(1) ** 2).mean())


def haar_constants(d: int, bits: int, samples: int, rng: np.random.Generator):
    """A = E<y, e>^2 and B = E|e|^2 for y uniform on the unit sphere, e = y - Q(y)."""
    a = b = 0.0
    chunk = max(1, (1 << 22) // d)
    done = 0
    while done < samples:
        m = min(chunk, samples - done)
        y = rng.standard_normal((m, d))
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        e = y - quantize(y, d, bits)
        a += float(((y * e).sum(1) ** 2).sum())
        b += float((e * e).sum(1).sum())
        done += m
    return a / samples, b / samples


def dense_expected_ip_error(x: np.ndarray, q: np.ndarray, d: int, a: float, b: float) -> float:
    """Haar expectation of mean_i <q_i, x_i - x_hat_i>^2 for unit rows x (see module doc)."""
    c2 = (q.astype(np.float64) * x).sum(1) ** 2
    q2 = (q.astype(np.float64) ** 2).sum(1)
    return float((c2 * a + (q2 - c2) * (b - a) / (d - 1)).mean())


def measure_dim(d: int, rounds_list, hadamard_seeds: int, dense_seeds: int, rng_seed: int = 0):
    """Rows of the table at one dim: one per (bits, input set)."""
    n = max(256, (1 << 17) // d)
    rows = []
    for bits in BITS:
        theory = d * codebook.coordinate_mse(d, bits)
        a, b = haar_constants(d, bits, max(4096, (1 << 22) // d), np.random.default_rng([rng_seed, d, bits]))
        for name in SETS:
            per_kind = {}
            dense_ip_expected = []
            for kind, rounds in [("dense", 0)] + [("hadamard", r) for r in rounds_list]:
                seeds = dense_seeds if kind == "dense" else hadamard_seeds
                mses, ips = [], []
                for seed in range(seeds):
                    x, q = hard_inputs(name, d, n, np.random.default_rng([rng_seed, d, seed, 7]))
                    mse, ip = distortion(kind, d, seed, rounds, x, q, bits)
                    mses.append(mse)
                    ips.append(ip)
                    if kind == "hadamard" and rounds == rounds_list[0]:
                        dense_ip_expected.append(dense_expected_ip_error(x, q, d, a, b))
                per_kind[(kind, rounds)] = (np.array(mses), np.array(ips))
            ip_ref = float(np.mean(dense_ip_expected))
            dense_mse, dense_ip = per_kind[("dense", 0)]
            row = {"dim": d, "bits": bits, "set": name, "dense_mse_expected": theory,
                   "dense_mse_measured": float(dense_mse.mean()),
                   "dense_ip_err_expected": ip_ref, "dense_ip_err_measured": float(dense_ip.mean()),
                   "dense_seeds": dense_seeds, "hadamard_seeds": hadamard_seeds, "hadamard": {}}
            for r in rounds_list:
                mses, ips = per_kind[("hadamard", r)]
                row["hadamard"][r] = {
                    "mse": float(mses.mean()),
                    "mse_ratio": float(mses.mean() / theory),
                    "mse_ratio_se": float(mses.std(ddof=1) / math.sqrt(len(mses)) / theory),
                    "ip_err": float(ips.mean()),
                    "ip_ratio": float(ips.mean() / ip_ref),
                    "ip_ratio_se": float(ips.std(ddof=1) / math.sqrt(len(ips)) / ip_ref),
                }
            rows.append(row)
    return rows


def time_apply(d: int, n: int, repeats: int = 5) -> dict:
    """Best-of wall time of Rotation.apply on (n, d) random float32, per kind, in this process."""
    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    out = {}
    for kind in ("dense", "hadamard"):
        rot = Rotation(d, kind, 0)
        rot.apply(x[:64])   # compile / warm up
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            rot.apply(x)
            best = min(best, time.perf_counter() - t0)
        out[kind] = best
    return out


def time_in_subprocess(threads: int, d: int, n: int) -> dict:
    """time_apply in a fresh process limited to `threads` BLAS and Numba threads."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    code = ("import json, sys; sys.path.insert(0, %r); import rotation_distortion as b; "
            "print(json.dumps(b.time_apply(%d, %d)))" % (str(Path(__file__).parent), d, n))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results/rotation_distortion.json")
    parser.add_argument("--dims", default=",".join(map(str, DIMS)))
    parser.add_argument("--rounds", default="2,3,4", help="Hadamard round counts to measure")
    parser.add_argument("--hadamard-seeds", type=int, default=64)
    parser.add_argument("--dense-seeds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="fewer seeds, for a smoke run")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)
    dims = [int(v) for v in args.dims.split(",")]
    rounds_list = [int(v) for v in args.rounds.split(",")]
    # Every round count "auto" may use gets a column; "used" marks the one per dim.
    rounds_list = sorted(set(rounds_list) | {2, 3})
    hseeds, dseeds = (8, 2) if args.quick else (args.hadamard_seeds, args.dense_seeds)

    print(f"unit-vector MSE and inner-product error, Hadamard over {hseeds} seeds vs the exact "
          f"Haar expectation (dense measured over {dseeds} seeds as a check); "
          f"ratio = hadamard / dense, ± one standard error; apply time: best of 5 on 2^23/d "
          f"random rows, default thread count")
    header = (f"{'d':>5} {'bits':>4} {'set':>8} {'dense MSE':>10} {'(meas.)':>8} "
              + " ".join(f"{'H' + str(r) + ' MSE ratio':>17}" for r in rounds_list)
              + f" {'used':>4} {'IP ratio':>15}  {'apply ms dense/had':>19}")
    print(header)
    results = {"dims": dims, "bits": list(BITS), "sets": list(SETS), "rounds": rounds_list,
               "hadamard_rounds_used": {}, "rows": [], "auto": {}, "timing": {}}
    for d in dims:
        t0 = time.perf_counter()
        used = hadamard_round_count(d)
        results["hadamard_rounds_used"][d] = used
        rows = measure_dim(d, rounds_list, hseeds, dseeds)
        times = time_apply(d, max(1024, (1 << 23) // d)) if not args.no_timing else None
        for row in rows:
            row["apply_seconds"] = times
            row["apply_rows"] = max(1024, (1 << 23) // d)
            h = row["hadamard"]
            timing = (f"{times['dense'] * 1e3:8.1f}/{times['hadamard'] * 1e3:<8.1f}" if times else "")
            print(f"{d:>5} {row['bits']:>4} {row['set']:>8} {row['dense_mse_expected']:>10.5f} "
                  f"{row['dense_mse_measured'] / row['dense_mse_expected']:>8.3f} "
                  + " ".join(f"{h[r]['mse_ratio']:>10.3f}±{h[r]['mse_ratio_se']:.3f}" for r in rounds_list)
                  + f" {'H' + str(used):>4} {h[used]['ip_ratio']:>8.3f}±{h[used]['ip_ratio_se']:.3f}"
                  + f"  {timing:>19}")
        worst = max(row["hadamard"][used]["mse_ratio"] for row in rows)
        results["auto"][d] = {"worst_mse_ratio": worst, "auto_kind": resolve_kind(d)}
        print(f"      d={d}: worst H{used} MSE ratio {worst:.3f}; auto -> {resolve_kind(d)} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        results["rows"].extend(rows)

    if not args.no_timing:
        d, n = TIMING_SHAPE[1], TIMING_SHAPE[0]
        # Other work on the machine inflates these: the load average goes with them.
        load = os.getloadavg()[0]
        print(f"\napply() on {n} x {d} float32, best of 5 (fresh process per thread count; "
              f"load average before: {load:.2f}):")
        results["timing"]["load_average_before"] = load
        for threads in (1, 2):
            t = time_in_subprocess(threads, d, n)
            results["timing"][threads] = t
            print(f"  {threads} thread(s): dense {t['dense']:.3f} s   hadamard {t['hadamard']:.3f} s")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
