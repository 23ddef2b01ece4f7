"""Machine description and timing helpers shared by every benchmark.

Absolute times differ between machines; every later table quotes its numbers next to an
fp32 matmul rate, the roofline scale for compute-bound work on that machine: where it can,
a GEMM (`gemm_probe`, `ort_gemm_probe`) timed as one more candidate in the same rounds as
the times it scales, since this VM's speed drifts within minutes; elsewhere `gemm_rate()`,
measured once in the same run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.stats import summarize


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux); empty where it is missing."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, val = line.partition(":")
                fields[key.strip()] = val.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


# The vector extensions that decide which GEMM kernels MKL and MLAS pick: a whole mobilei2v
# step ran ~2x faster on onnxruntime than in torch on an AVX-512 Zen 4, and the same on an
# AVX2 Zen 3, both "AMD EPYC" by name.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def cpu_details() -> dict[str, Any]:
    """CPU family/model/stepping and the SIMD_FLAGS it has, from /proc/cpuinfo (Linux):
    "AMD EPYC" alone names several generations. Empty where /proc/cpuinfo is missing."""
    fields = _cpuinfo()
    if not fields:
        return {}
    flags = set(fields.get("flags", "").split())
    return {
        "family_model_stepping": "/".join(
            fields.get(k, "?") for k in ("cpu family", "model", "stepping")
        ),
        "simd": [f for f in SIMD_FLAGS if f in flags],
    }


def available_memory() -> int:
    """Bytes of memory available to this process's new allocations now: the system's
    (Linux MemAvailable; elsewhere the free physical pages) plus what the process has freed
    and its allocator keeps for reuse (free_heap_bytes; with keep_freed_memory that is the
    process's whole past peak, which the system counts as used)."""
    system = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    system = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if system is None:
        system = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return system + free_heap_bytes()


@functools.lru_cache(maxsize=1)
def _glibc():
    """This process's glibc (ctypes), or None off glibc."""
    name = ctypes.util.find_library("c") if platform.libc_ver()[0] == "glibc" else None
    return ctypes.CDLL(name) if name is not None else None


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost",
    )]  # fmt: skip


def free_heap_bytes() -> int:
    """Bytes this process's glibc heap holds free for reuse (mallinfo2's fordblks, every
    arena); 0 off glibc or before glibc 2.33 (no mallinfo2)."""
    libc = _glibc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return 0
    fn.restype = _Mallinfo2
    return int(fn().fordblks)


def usable_cores() -> int:
    """Cores this process may run on (affinity), which can be fewer than os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
# Set by keep_freed_memory: what the process's allocator does now (machine_info records it).
_ALLOCATOR = {"allocator": "default", "keeps_freed_memory": False}
KEEP_FREED_ENV = "MOBILEATTN_KEEP_FREED_MEMORY"


def keep_freed_memory() -> dict[str, Any]:
    """Makes glibc's malloc keep the memory this process frees for its next allocations
    (mallopt: no mmap for large blocks, no trimming of the heap), and returns what the
    allocator does now (allocator_info).

    Why: glibc gives every block over its mmap threshold (at most 32 MiB) fresh pages from
    the kernel and returns them on free, so every large activation of a model step costs a
    page fault per 4 KiB page, zero-filled by the kernel: ~64,000 faults per mobilei2v
    block on torch at 3 x 23 x 40 and up to a quarter of its CPU time in the kernel
    (measured on an AVX2 Zen 3, bench/results/ab-allocator.json). onnxruntime's arena and
    the jemalloc / tcmalloc that PyTorch's CPU tuning guide recommends avoid this; this is
    the same reuse without a preloaded library. The price: the process's resident memory
    stays near its peak (only a free top of the heap past 2 GiB goes back to the system),
    which available_memory counts as this process's own. A no-op off glibc (recorded as
    such), or where the environment sets MOBILEATTN_KEEP_FREED_MEMORY=0. Idempotent;
    affects the whole process."""
    if os.environ.get(KEEP_FREED_ENV, "1") == "0":
        _ALLOCATOR.update(allocator="default", keeps_freed_memory=False,
                          why=f"{KEEP_FREED_ENV}=0")  # fmt: skip
        return allocator_info()
    libc = _glibc()
    if libc is None:
        _ALLOCATOR.update(allocator="default", keeps_freed_memory=False, why="not glibc")
        return allocator_info()
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
    # the largest value mallopt takes (an int): up to 2 GiB free at the heap's top stays
    ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:  # glibc refused a setting: say so rather than pretend
        _ALLOCATOR.update(allocator="glibc", keeps_freed_memory=False, why="mallopt refused")
        return allocator_info()
    _ALLOCATOR.update(allocator="glibc, mmap off, trim off", keeps_freed_memory=True)
    _ALLOCATOR.pop("why", None)
    return allocator_info()


def allocator_info() -> dict[str, Any]:
    """What this process's allocator does (see keep_freed_memory), plus its peak resident
    memory so far in MiB (Linux/macOS; None elsewhere)."""
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        peak = rss / (2**20 if platform.system() == "Darwin" else 2**10)
    except (ImportError, OSError):
        peak = None
    return {**_ALLOCATOR, "peak_rss_mib": peak}


def machine_info() -> dict[str, Any]:
    """What the numbers of a run depend on: CPU, cores, library versions, threads, GPU."""
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu_model(),
        "cpu_details": cpu_details(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "cuda_version": torch.version.cuda if cuda else None,
        # other work on a shared machine skews timings: record how busy it was
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "allocator": allocator_info(),
    }


def _sync_for(device: torch.device) -> Callable[[], None] | None:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


def no_cache(stage: str, key: dict, fn: Callable[[], Any]):
    """The `measure(stage, key, fn) -> (value, from_cache)` hook without a cache: every
    measurement runs (what the study's cache replaces)."""
    return fn(), False


def _check_positive(name: str, val) -> None:
    if isinstance(val, bool) or not isinstance(val, int) or val < 1:
        raise ValueError(f"{name} must be a positive int, got {val!r}")


def check_counts(warmup, repeats) -> None:
    for name, val, lo in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {val!r}")


def time_fn(
    fn: Callable[[], Any],
    warmup: int = 1,
    repeats: int = 5,
    sync: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Times `fn()` (torch's thread count is left as it is).

    Args:
        fn: the work, called without arguments.
        warmup: untimed calls first (allocation, lazy init, caches).
        repeats: timed calls, each timed alone.
        sync: called after each call inside the timed region (e.g. torch.cuda.synchronize)
            so that asynchronous work is counted.

    Returns:
        bench.stats.summarize of the seconds per call: median, p10, p90, a bootstrap
        interval of the median (ci_low, ci_high), mean, repeats and the raw times.
    """
    return time_interleaved({"fn": fn}, warmup=warmup, repeats=repeats, sync=sync)["fn"]


@dataclass(frozen=True)
class Loaded:
    """A candidate too big to keep in memory beside the others (a whole-model onnxruntime
    session holds its prepacked weights, ~1 GB for mobilei2v; its activations come from an
    arena, ~2 GB more, which the process's sessions share: bench.latency.ARENA_WEIGHT_FACTOR):
    `load()` returns the no-argument callable to time, and dropping that callable frees
    what it holds (but the shared arena, which keeps its size for the next session).
    time_interleaved loads it before each of its timed calls, outside the timed region,
    runs it `warm` times untimed (first-run allocation), times one call and drops it, so
    one such candidate is in memory at a time."""

    load: Callable[[], Callable[[], Any]]
    warm: int = 1

    def __post_init__(self):
        if not callable(self.load):
            raise ValueError(f"load must be callable, got {self.load!r}")
        if isinstance(self.warm, bool) or not isinstance(self.warm, int) or self.warm < 0:
            raise ValueError(f"warm must be an int >= 0, got {self.warm!r}")


def time_interleaved(
    fns: dict[str, Callable[[], Any] | Loaded],
    warmup: int = 1,
    repeats: int = 7,
    sync: Callable[[], None] | None = None,
    progress=None,
) -> dict[str, dict[str, Any]]:
    """Times several candidates in rounds, so that drift of a shared machine (other work,
    clocks, memory reclaim) hits all alike: each round calls every candidate once, and the
    order rotates from round to round (A B C, B C A, C A B, ...) so that no candidate always
    follows the same neighbour's cache state. `warmup` untimed rounds first; a `Loaded`
    candidate is loaded and warmed before each timed call instead (see Loaded). Returns
    {name: summarize(...)}; `progress(done, total)` is called after each timed call."""
    check_counts(warmup, repeats)
    if not fns:
        raise ValueError("fns must hold at least one candidate")

    def call(fn):
        fn()
        if sync is not None:
            sync()

    for _ in range(warmup):
        for fn in fns.values():
            if not isinstance(fn, Loaded):
                call(fn)
    # leftovers of building the candidates (an ONNX export leaves millions of objects)
    # would otherwise be collected inside some timed call
    gc.collect()
    times: dict[str, list[float]] = {name: [] for name in fns}
    done, total = 0, repeats * len(fns)
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            staged = isinstance(fn, Loaded)
            if staged:
                fn = fn.load()
                for _ in range(fns[name].warm):
                    call(fn)
            t0 = time.perf_counter()
            call(fn)
            times[name].append(time.perf_counter() - t0)
            if staged:
                del fn
                gc.collect()  # free the session before the next one is loaded
            done += 1
            if progress is not None:
                progress(done, total)
    return {name: summarize(ts) for name, ts in times.items()}


# The size of the GEMM probe timed beside the measurements it scales (zoo, whole models):
# big enough to run the matmul kernels at their steady rate (~55 ms at 300 GFLOP/s).
GEMM_PROBE_N = 2048


def gemm_flops(n: int) -> int:
    """FLOPs of an (n x n) @ (n x n) product: 2 n^3 (the GEMM probes' work)."""
    _check_positive("n", n)
    return 2 * n**3


def gemm_probe(n: int = GEMM_PROBE_N, device: str | torch.device = "cpu") -> Callable[[], Any]:
    """A no-argument fp32 (n x n) @ (n x n) product through torch (gemm_flops(n) FLOPs, into
    a preallocated output): the roofline's work, to time alone (gemm_rate) or as one more
    candidate of time_interleaved, so that the rate comes from the same rounds as the
    times it scales (on a VM whose speed drifts, a rate measured minutes apart does not)."""
    _check_positive("n", n)
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    out = torch.empty(n, n, device=device)
    return lambda: torch.matmul(a, b, out=out)


def gemm_rate(
    n: int = GEMM_PROBE_N, repeats: int = 5, warmup: int = 1, device: str | torch.device = "cpu"
) -> float:
    """The fp32 matmul rate through torch: median GFLOP/s of gemm_probe(n)."""
    device = torch.device(device)
    t = time_fn(gemm_probe(n, device), warmup, repeats, _sync_for(device))
    return gemm_flops(n) / t["median"] / 1e9


def ort_gemm_probe(n: int = GEMM_PROBE_N) -> Callable[[], Any]:
    """gemm_probe through onnxruntime: one MatMul node of two (n x n) fp32 inputs, in a
    session from export.onnx.session (threads as torch's, spinning off, the shared arena),
    as a no-argument callable."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper

    from export.onnx import session

    _check_positive("n", n)
    a, b, y = (helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "aby")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "gemm", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    gen = np.random.default_rng(0)
    feed = {k: gen.standard_normal((n, n), dtype=np.float32) for k in "ab"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.onnx"
        onnx.save(model, path)
        sess = session(path)
    return lambda: sess.run(None, feed)


def ort_gemm_rate(n: int = GEMM_PROBE_N, repeats: int = 5, warmup: int = 1) -> float:
    """The fp32 matmul rate through onnxruntime: median GFLOP/s of ort_gemm_probe(n).
    onnxruntime's MLAS kernels are not torch's MKL ones, so an onnxruntime model's
    fraction of GEMM is quoted against this rate."""
    t = time_fn(ort_gemm_probe(n), warmup, repeats)
    return gemm_flops(n) / t["median"] / 1e9


def copy_bandwidth(
    mib: int = 256, repeats: int = 5, warmup: int = 1, device: str | torch.device = "cpu"
) -> float:
    """Memory bandwidth of a large tensor copy through torch, median GB/s, counting the
    bytes read plus the bytes written (the memory roofline's scale)."""
    _check_positive("mib", mib)
    device = torch.device(device)
    src = torch.ones(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), warmup, repeats, _sync_for(device))
    return 2 * src.numel() * 4 / t["median"] / 1e9
