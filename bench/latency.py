"""Latency tables of the hybrid DiT: per block and per attention variant, and whole models,
on a backend ("torch-cpu", "onnxruntime-cpu", "cuda"), with machine info and the fp32 GEMM
rate measured in the same run.

Every block of a preset has the same shape, so one block per variant is measured and that
number stands for every block index (the table says so: `measured_as`). The non-block
parts (patch embedding, conditioning, final layer) are timed as `overhead`, so that
predicted model latency = overhead + the sum of the chosen blocks' latencies; whole-model
measurements check that sum.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import attention_zoo as az
from bench.machine import gemm_rate, machine_info, time_fn
from hybrid_dit import (
    PRESETS,
    DiTConfig,
    HybridDiT,
    check_grid,
    example_inputs,
    format_pattern,
    model_flops,
)
from hybrid_dit.model import DiTBlock, Rope, rope_tables

BACKENDS = ("torch-cpu", "onnxruntime-cpu", "cuda")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda" and not torch.cuda.is_available():
        raise ValueError("backend 'cuda' needs a CUDA device; none is available here")
    if backend == "onnxruntime-cpu":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ValueError(f"backend 'onnxruntime-cpu' needs onnxruntime ({e})") from None


class _BlockOnly(nn.Module):
    """One block with its RoPE tables and grid baked in: forward(x, cond), for timing and
    for export."""

    def __init__(self, block: DiTBlock, rope: Rope, grid):
        super().__init__()
        self.block, self.grid, self.pairs = block, tuple(grid), rope.pairs
        self.register_buffer("cos", rope.cos)
        self.register_buffer("sin", rope.sin)

    def forward(self, x, cond):
        return self.block(x, cond, Rope(self.cos, self.sin, self.pairs), self.grid)


class _Overhead(nn.Module):
    """Everything of the model but its blocks: embedding, conditioning, final layer. The
    block conditioning is returned too, so that no exporter drops it as unused."""

    def __init__(self, model: HybridDiT):
        super().__init__()
        self.model = model

    def forward(self, x_t, t, first_frame, motion):
        p = self.model.prepare(x_t, t, first_frame, motion)
        return self.model.head(p.x, p), p.cond


def _runner(module: nn.Module, inputs: tuple, backend: str, workdir: Path) -> Callable[[], object]:
    """A no-argument callable that runs `module(*inputs)` on `backend`."""
    module.eval()
    if backend in ("torch-cpu", "cuda"):

        def run():
            with torch.inference_mode():
                return module(*inputs)

        return run
    import onnxruntime as ort

    from export.onnx import input_names, to_onnx

    path = Path(tempfile.mkstemp(suffix=".onnx", dir=workdir)[1])
    to_onnx(module, inputs, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = dict(zip(input_names(module, len(inputs)), (i.numpy() for i in inputs), strict=True))
    return lambda: sess.run(None, feed)


def _sync(backend):
    return torch.cuda.synchronize if backend == "cuda" else None


def block_table(
    preset: str | DiTConfig = "mobilei2v",
    grid=(3, 23, 40),
    backend: str = "torch-cpu",
    variants: Sequence[str] | None = None,
    repeats: int = 5,
    warmup: int = 1,
    progress: bool = True,
    measure: Callable | None = None,
) -> dict:
    """Median latency of one block per variant, and of the non-block overhead.

    `measure(stage, key, fn)` may wrap each measurement (the study's cache); by default
    every measurement runs. Returns a JSON-able dict."""
    check_backend(backend)
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    grid = check_grid(grid)
    names = list(az.VARIANTS) if variants is None else [az.get(v).name for v in variants]
    device = "cuda" if backend == "cuda" else "cpu"
    measure = measure or (lambda stage, key, fn: (fn(), False))
    n = math.prod(grid)
    base = {
        "preset": cfg.to_dict(),
        "grid": list(grid),
        "backend": backend,
        "repeats": repeats,
        "warmup": warmup,
        "torch": torch.__version__,
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in tqdm(
            names, desc=f"block latency ({backend})", disable=not progress, leave=False
        ):

            def one(name=name):
                c = cfg.with_attention(name)
                torch.manual_seed(0)
                block = DiTBlock(c, 0).to(device)
                module = _BlockOnly(block, rope_tables(c, grid, device=device), grid)
                gen = torch.Generator().manual_seed(1)
                x = torch.randn(1, n, c.hidden, generator=gen).to(device)
                cond = (0.1 * torch.randn(1, grid[0], 6, c.hidden, generator=gen)).to(device)
                run = _runner(module, (x, cond), backend, Path(tmp))
                t = time_fn(run, warmup=warmup, repeats=repeats, sync=_sync(backend))
                return {"variant": name, **_ms(t)}

            row, cached = measure("block", {**base, "variant": name}, one)
            rows.append({**row, "cached": cached})

        def overhead():
            torch.manual_seed(0)
            model = HybridDiT(cfg.with_attention("softmax")).to(device)
            inputs = example_inputs(cfg, grid, device=device)
            run = _runner(_Overhead(model), inputs, backend, Path(tmp))
            return _ms(time_fn(run, warmup=warmup, repeats=repeats, sync=_sync(backend)))

        over, over_cached = measure("overhead", base, overhead)
    return {
        "what": "per-block latency (one block per variant; every block has this shape)",
        "preset": cfg.to_dict(),
        "grid": list(grid),
        "N": n,
        "backend": backend,
        "depth": cfg.depth,
        "variants": rows,
        "overhead": {**over, "cached": over_cached},
        "measured_as": "block 0 of a model whose blocks all have one shape",
    }


def model_table(
    preset: str | DiTConfig = "mobilei2v",
    grid=(3, 23, 40),
    backend: str = "torch-cpu",
    patterns: Sequence = ("softmax", "L*7,S,L*7,S", "relu_linear"),
    blocks: dict | None = None,
    repeats: int = 3,
    warmup: int = 1,
    progress: bool = True,
    measure: Callable | None = None,
) -> dict:
    """Whole-model latency (one denoising step, batch 1) for each pattern, and when a block
    table is given, the prediction overhead + sum of block latencies next to it."""
    check_backend(backend)
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    grid = check_grid(grid)
    device = "cuda" if backend == "cuda" else "cpu"
    measure = measure or (lambda stage, key, fn: (fn(), False))
    base = {
        "preset": cfg.to_dict(),
        "grid": list(grid),
        "backend": backend,
        "repeats": repeats,
        "warmup": warmup,
        "torch": torch.__version__,
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pattern in tqdm(
            patterns, desc=f"model latency ({backend})", disable=not progress, leave=False
        ):
            c = cfg.with_attention(pattern)

            def one(c=c):
                torch.manual_seed(0)
                model = HybridDiT(c).to(device)
                inputs = example_inputs(c, grid, device=device)
                run = _runner(model, inputs, backend, Path(tmp))
                out = _ms(time_fn(run, warmup=warmup, repeats=repeats, sync=_sync(backend)))
                del model
                return out

            row, cached = measure("model", {**base, "attention": list(c.attention)}, one)
            row = {
                "pattern": format_pattern(c.attention),
                "attention": list(c.attention),
                **row,
                "cached": cached,
            }
            flops = model_flops(c, grid)["total"]
            row["gflops"] = flops / (row["median_ms"] * 1e-3) / 1e9
            if blocks is not None:
                row["predicted_ms"] = predict_ms(blocks, c.attention)
                row["prediction_error"] = row["predicted_ms"] / row["median_ms"] - 1
            rows.append(row)
    return {
        "what": "whole-model latency, one denoising step, batch 1",
        "preset": cfg.to_dict(),
        "grid": list(grid),
        "backend": backend,
        "models": rows,
    }


def predict_ms(blocks: dict, attention: Sequence[str]) -> float:
    """overhead + sum of the block latencies of `attention` (one variant per block)."""
    per = {r["variant"]: r["median_ms"] for r in blocks["variants"]}
    missing = sorted(set(attention) - set(per))
    if missing:
        raise ValueError(f"the block table has no latency for {', '.join(missing)}")
    return blocks["overhead"]["median_ms"] + sum(per[v] for v in attention)


def per_block_latency(blocks: dict) -> list[dict[str, float]]:
    """The block table expanded to one {variant: ms} dict per block index, for the search."""
    per = {r["variant"]: r["median_ms"] for r in blocks["variants"]}
    return [dict(per) for _ in range(blocks["depth"])]


def _ms(t: dict) -> dict:
    return {
        "median_ms": t["median"] * 1e3,
        "p10_ms": t["p10"] * 1e3,
        "p90_ms": t["p90"] * 1e3,
        "repeats": t["repeats"],
    }


def machine_block(device: str = "cpu") -> dict:
    """Machine info plus the fp32 GEMM rate measured now (the roofline scale)."""
    return {"machine": machine_info(), "gemm_gflops": gemm_rate(device=device)}
