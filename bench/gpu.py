"""GPU benchmark of the Triton kernels: `python -m bench.gpu`.

For every variant with a Triton kernel and every shape of the sweep (B in {1, 2}, H = 16,
D in {64, 72, 128}, N in {2760, 6120, 16384, 32768}, bf16) it times the kernel, the torch
reference and, as the baseline to beat, torch SDPA with each backend (flash, cuDNN,
memory-efficient, math; a backend that fails on a shape is recorded with the reason).
Per-frame softmax is compared with SDPA run per frame (the frames as extra batch), every
other variant with full SDPA. Quadratic kernels report TFLOP/s (4 B H N^2 D, per frame for
softmax_frame); linear kernels report GB/s and the share of the device's copy bandwidth,
measured in the same run. Correctness is checked once per case, outside the timed region.

Results go to bench/results/gpu-<device>.json (written atomically) and a table is printed.
Without CUDA the command prints why and exits with code 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import attention_zoo as az
from bench.grids import grid_for

Timer = Callable[[Callable[[], Any]], dict]  # fn -> {"ms": ..., "ms_graph": ...}

BATCHES = (1, 2)
HEADS = 16
HEAD_DIMS = (64, 72, 128)
LENGTHS = (2760, 6120, 16384, 32768)
DTYPE = torch.bfloat16
SDPA_BACKENDS = ("flash", "cudnn", "efficient", "math")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
COPY_BYTES = 1 << 30  # 1 GiB source: far beyond L2, so the copy runs at HBM speed
# outputs off by more than this relative RMS are wrong, not imprecise (bf16 rounding alone
# is ~2e-3); the precision rule itself is tested in tests/test_triton.py
MAX_REL_ERR = 2e-2
# the math backend materialises fp32 scores; skip it when they would not fit this share
MATH_MEMORY_SHARE = 0.5
NO_CUDA_MESSAGE = (
    "bench.gpu needs a CUDA GPU (torch.cuda.is_available() is False here); "
    "the CPU latency tables come from `mobileattn bench`"
)


@dataclass(frozen=True)
class Shape:
    """One benchmark shape: q, k, v of (B, H, N, D)."""

    B: int
    H: int
    N: int
    D: int


def sweep(
    batches: Iterable[int] = BATCHES,
    heads: int = HEADS,
    head_dims: Iterable[int] = HEAD_DIMS,
    lengths: Iterable[int] = LENGTHS,
) -> list[Shape]:
    """The shapes to run, smallest work first (B, then D, then N vary slowest to fastest)."""
    return [Shape(b, heads, n, d) for b in batches for d in head_dims for n in lengths]


def variant_opts(var, shape: Shape) -> dict:
    """Options for a variant at a shape: a video-like token grid where the variant needs one
    (bench.grids.grid_for: (3, 23, 40) for N = 2760), defaults otherwise."""
    return {"grid": grid_for(shape.N)} if "grid" in var.defaults else {}


def baseline_scope(var) -> str:
    """Which SDPA a variant is compared with: per-frame SDPA for per-frame attention, full
    SDPA for everything else (the softmax attention it would replace)."""
    return "frame" if "grid" in var.required else "full"


def sdpa_flops(shape: Shape, scope: str) -> int:
    """4 B H N^2 D for full attention, 4 B H T F^2 D per frame (F = N / T tokens)."""
    if scope == "frame":
        t = grid_for(shape.N)[0]
        return 4 * shape.B * shape.H * t * (shape.N // t) ** 2 * shape.D
    return 4 * shape.B * shape.H * shape.N**2 * shape.D


def tflops(flops: int, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e12


def gbs(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def make_row(
    variant: str,
    impl: str,
    shape: Shape,
    *,
    kind: str,
    ms: float | None = None,
    ms_graph: float | None = None,
    flops: int | None = None,
    nbytes: int | None = None,
    copy_gbs: float | None = None,
    rel_err: float | None = None,
    skipped: str | None = None,
    grid: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """One result row. Quadratic kinds get TFLOP/s, linear ones GB/s and % of the copy
    bandwidth; a row that did not run has ms None and the reason in `skipped`."""
    row: dict[str, Any] = {
        "variant": variant,
        "impl": impl,
        "B": shape.B,
        "H": shape.H,
        "N": shape.N,
        "D": shape.D,
        "grid": list(grid) if grid else None,
        "kind": kind,
        "ms": ms,
        "ms_graph": ms_graph,
        "tflops": None,
        "gbs": None,
        "pct_copy_bw": None,
        "rel_err": rel_err,
        "ok": None if rel_err is None else bool(rel_err <= MAX_REL_ERR),
        "skipped": skipped,
    }
    if ms is not None:
        if kind != "linear" and flops is not None:
            row["tflops"] = tflops(flops, ms)
        if kind == "linear" and nbytes is not None:
            row["gbs"] = gbs(nbytes, ms)
            if copy_gbs:
                row["pct_copy_bw"] = 100.0 * row["gbs"] / copy_gbs
    return row


def _key(row: dict) -> tuple:
    return row["B"], row["H"], row["N"], row["D"]


def add_speedups(rows: list[dict], scopes: dict[str, str]) -> list[dict]:
    """Adds to each Triton row `vs_best_sdpa` (best SDPA backend's ms / kernel ms, SDPA of
    the variant's scope: "full" rows are variant "sdpa", "frame" rows "sdpa_frame") and
    `vs_reference` (reference ms / kernel ms). Missing baselines give None."""
    sdpa: dict[tuple, float] = {}
    ref: dict[tuple, float] = {}
    for r in rows:
        if r["ms"] is None:
            continue
        if r["variant"] in ("sdpa", "sdpa_frame"):
            k = (r["variant"], *_key(r))
            sdpa[k] = min(sdpa.get(k, math.inf), r["ms"])
        elif r["impl"] == "reference":
            ref[(r["variant"], *_key(r))] = r["ms"]
    for r in rows:
        if r["impl"] != "triton":
            continue
        base = "sdpa_frame" if scopes.get(r["variant"]) == "frame" else "sdpa"
        best = sdpa.get((base, *_key(r)))
        reference = ref.get((r["variant"], *_key(r)))
        ok = r["ms"] is not None
        r["vs_best_sdpa"] = best / r["ms"] if ok and best is not None else None
        r["vs_reference"] = reference / r["ms"] if ok and reference is not None else None
    return rows


def assemble(
    device: str, versions: dict[str, str], copy_gbs: float, rows: list[dict], extra: dict
) -> dict[str, Any]:
    """The JSON document of one run."""
    return {
        "device": device,
        "dtype": str(DTYPE).replace("torch.", ""),
        "versions": versions,
        "copy_bandwidth_gbs": copy_gbs,
        "rows": rows,
        **extra,
    }


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-device"


def write_json_atomic(path: Path, doc: dict) -> Path:
    """Writes `doc` to a temporary file in path's folder, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def _fmt(val: Any, spec: str) -> str:
    return "-" if val is None else format(val, spec)


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of the rows, one line each."""
    head = (
        f"{'variant':<15} {'impl':<15} {'B':>2} {'N':>6} {'D':>4} {'ms':>9} {'TFLOP/s':>8} "
        f"{'GB/s':>7} {'%copy':>6} {'xSDPA':>6} {'xref':>6} {'relerr':>8}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['variant']:<15} {r['impl']:<15} {r['B']:>2} {r['N']:>6} {r['D']:>4} "
            f"{_fmt(r['ms'], '9.3f')} {_fmt(r['tflops'], '8.1f')} {_fmt(r['gbs'], '7.0f')} "
            f"{_fmt(r['pct_copy_bw'], '6.1f')} {_fmt(r.get('vs_best_sdpa'), '6.2f')} "
            f"{_fmt(r.get('vs_reference'), '6.2f')} {_fmt(r['rel_err'], '8.1e')}  "
            f"{'' if r['ok'] is not False else 'WRONG '}{r['skipped'] or ''}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--heads", type=int, default=HEADS)
    p.add_argument("--head-dims", type=int, nargs="+", default=list(HEAD_DIMS))
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    p.add_argument("--variants", nargs="+", default=None, help="default: every Triton kernel")
    p.add_argument("--no-reference", action="store_true", help="skip the torch references")
    p.add_argument("--graph", action="store_true", help="also time CUDA-graph replays")
    p.add_argument("--out", type=Path, default=None, help="default: bench/results/gpu-<dev>.json")
    args = p.parse_args(argv)
    for name in ("batches", "head_dims", "lengths"):
        if any(v < 1 for v in getattr(args, name)):
            p.error(f"--{name.replace('_', '-')} must be positive ints, got {getattr(args, name)}")
    known = [n for n, v in az.VARIANTS.items() if v.triton_path]
    for name in args.variants or []:
        if name not in known:
            p.error(f"--variants: {name!r} has no Triton kernel; choose from {', '.join(known)}")
    args.variants = args.variants or known
    return args


# -- GPU side ------------------------------------------------------------------------------


def _median_ms(fn: Callable[[], Any]) -> float:
    """Median ms per call; triton's do_bench clears L2 before every call, and that clearing
    kernel also hides the host-side launch cost of short kernels."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _times(fn: Callable[[], Any], graph: bool) -> dict[str, float | None]:
    """ms (do_bench) and, with graph, ms_graph: replayed from a CUDA graph, no launch cost
    at all (but warm L2)."""
    out: dict[str, float | None] = {"ms": _median_ms(fn)}
    if graph:
        import triton.testing

        try:
            out["ms_graph"] = float(triton.testing.do_bench_cudagraph(fn, return_mode="median"))
        except RuntimeError:
            out["ms_graph"] = None
    return out


def copy_bandwidth_gbs() -> float:
    """Device copy bandwidth: bytes read + written by a 1 GiB device-to-device copy."""
    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return gbs(2 * COPY_BYTES, _median_ms(lambda: dst.copy_(src)))


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def _why(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:160]}"


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _sdpa_rows(q, k, v, shape: Shape, scope: str, ref, timer: Timer) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }
    grid = grid_for(shape.N) if scope == "frame" else None
    if grid is not None:
        t = grid[0]
        # frames as extra batch: (B, H, N, D) -> (B, H * T, F, D), a free view
        q, k, v = (x.view(shape.B, shape.H * t, shape.N // t, shape.D) for x in (q, k, v))
    name = "sdpa_frame" if scope == "frame" else "sdpa"
    flops = sdpa_flops(shape, scope)
    rows = []
    for label in SDPA_BACKENDS:
        common = dict(kind="softmax", flops=flops, grid=grid)
        if label == "math":
            need = 4 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]
            free = _free_bytes(q.device)
            if need > MATH_MEMORY_SHARE * free:
                why = f"scores need {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
                rows.append(make_row(name, f"sdpa:{label}", shape, skipped=why, **common))
                continue
        try:
            with sdpa_kernel(backends[label]):
                fn = functools.partial(F.scaled_dot_product_attention, q, k, v)
                out = fn()
                err = None if ref is None else _rel_err(out.view(ref.shape), ref)
                del out
                times = timer(fn)
            rows.append(make_row(name, f"sdpa:{label}", shape, **times, rel_err=err, **common))
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            rows.append(make_row(name, f"sdpa:{label}", shape, skipped=_why(exc), **common))
        torch.cuda.empty_cache()
    return rows


def _try(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor | None, str | None]:
    """fn() or (None, why) when it runs out of memory (unchunked references at large N)."""
    try:
        return fn(), None
    except torch.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        return None, _why(exc)


def run_shape(
    shape: Shape,
    variants: list[str],
    copy_gbs: float,
    reference: bool = True,
    timer: Timer | None = None,
    device: str = "cuda",
) -> list[dict]:
    """Times every variant (Triton and reference) and the SDPA baselines at one shape.
    timer(fn) -> {"ms": ..., "ms_graph": ...} (default `_times` without graphs); `device`
    and `timer` let the tests walk this on CPU through the Triton interpreter."""
    timer = timer or functools.partial(_times, graph=False)
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(shape.B, shape.H, shape.N, shape.D, device=device, generator=gen).to(DTYPE)
        for _ in range(3)
    )
    rows: list[dict] = []
    for scope in sorted({baseline_scope(az.get(n)) for n in variants}):
        var = az.get("softmax_frame" if scope == "frame" else "softmax")
        ref, _ = _try(functools.partial(var.reference, q, k, v, **variant_opts(var, shape)))
        rows += _sdpa_rows(q, k, v, shape, scope, ref, timer)
        del ref
    for name in variants:
        var = az.get(name)
        opts = variant_opts(var, shape)
        counts = dict(
            kind=var.kind,
            flops=var.flops(shape.B, shape.H, shape.N, shape.D, **opts),
            nbytes=var.bytes(shape.B, shape.H, shape.N, shape.D, dtype=DTYPE, **opts),
            copy_gbs=copy_gbs,
            grid=opts.get("grid"),
        )
        ref_fn = functools.partial(var.reference, q, k, v, **opts)
        kernel = functools.partial(var.triton, q, k, v, **opts)
        ref, why = _try(ref_fn)
        try:
            out = kernel()
            err = None if ref is None else _rel_err(out, ref)
            del out
            rows.append(make_row(name, "triton", shape, **timer(kernel), rel_err=err, **counts))
        except Exception as exc:  # compile errors too: record why and go on with the sweep
            rows.append(make_row(name, "triton", shape, skipped=_why(exc), **counts))
        del ref
        if not reference:
            continue
        if why is not None:
            rows.append(make_row(name, "reference", shape, skipped=why, **counts))
            continue
        try:
            rows.append(make_row(name, "reference", shape, **timer(ref_fn), **counts))
        except torch.OutOfMemoryError as exc:
            rows.append(make_row(name, "reference", shape, skipped=_why(exc), **counts))
        torch.cuda.empty_cache()
    return rows


def versions() -> dict[str, str]:
    import triton

    return {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 2
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        print(f"bench.gpu needs Triton: {exc}", file=sys.stderr)
        return 2
    from bench.machine import machine_info

    device = torch.cuda.get_device_name(0)
    copy_gbs = copy_bandwidth_gbs()
    print(f"{device}: device copy bandwidth {copy_gbs:.0f} GB/s", flush=True)
    out = args.out or RESULTS_DIR / f"gpu-{device_slug(device)}.json"
    rows: list[dict] = []
    scopes = {n: baseline_scope(az.get(n)) for n in args.variants}
    timer = functools.partial(_times, graph=args.graph)
    for shape in sweep(args.batches, args.heads, args.head_dims, args.lengths):
        shape_rows = run_shape(shape, args.variants, copy_gbs, not args.no_reference, timer)
        add_speedups(shape_rows, scopes)
        print(format_table(shape_rows), flush=True)
        rows += shape_rows
        # rewritten after every shape, so an interrupted sweep keeps what it measured
        doc = assemble(device, versions(), copy_gbs, rows, {"machine": machine_info()})
        write_json_atomic(out, doc)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
