"""Facts about the machine a measurement ran on, for result files (CLI, reports, bench scripts)."""
from __future__ import annotations

import os
import platform
from importlib import metadata

LIBRARIES = ("turboann", "numpy", "numba", "tbb", "h5py", "faiss-cpu", "turbovec")
# The /proc/cpuinfo flags the kernels (ours and the anchors') choose instructions by.
_SIMD_FLAGS = ("fma", "bmi2", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512vbmi",
               "avx512_vbmi2", "avx512_bitalg", "avx512_vpopcntdq", "gfni")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def usable_cores() -> int | None:
    """The CPUs this process may run on (its affinity), or None where the OS cannot tell."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def machine_info() -> dict:
    """CPU, cores, SIMD flags, memory, OS, library versions and the current load average."""
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        mem_gib = None
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable_cores(),
        "simd": [f for f in _SIMD_FLAGS if f" {f}" in flags or flags.endswith(f" {f}")],
        "memory_gib": None if mem_gib is None else round(mem_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in LIBRARIES},
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
