"""Latency tables of a diffusers transformer with zoo attention: per block and per variant
(the format bench.latency.block_table writes and the search reads), and whole models for
given patterns, on torch-cpu, onnxruntime-cpu or cuda. Random weights (latency does not
depend on them); nothing is downloaded.

    python -m bench.diffusers_latency              # the closing-note table (full size)
    python -m bench.diffusers_latency --size tiny  # the same run at a toy size

The closing-note table: a SANA-Video-shaped `SanaVideoTransformer3DModel` of MobileI2V's
width (16 x 72 heads, hidden 1152, 16 layers, 128 latent channels, patch 1) at the
3 x 23 x 40 grid, for softmax, relu_linear and the 7:1 pattern on both CPU backends, beside
our own mobilei2v preset's tables from the same run; written atomically to
bench/results/diffusers-latency.json with machine info and the load average.

Measured as bench.latency measures the hybrid DiT: each variant's block is timed inside a
stack of `stack` blocks (the model's first blocks, its own weights), per block = stack time
/ stack; everything but the blocks (patch embedding, timestep and caption embedding, output
layers) is the `overhead` row; every candidate of a table is timed in interleaved rounds.
A block is called with exactly what the model passes its first block (captured once from a
real forward), so rotary tables, modulation, caption states and the grid are the model's.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import itertools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import attention_zoo as az
from attention_zoo.diffusers import attention_pattern, self_attention_blocks, set_attention
from bench.latency import (
    STACK,
    check_backend,
    machine_block,
    make_runner,
    per_block_rows,
    predict_ms,
    runtime_info,
    time_runners,
)
from bench.machine import no_cache
from bench.stats import ms_row, relative_error
from hybrid_dit import check_grid, format_pattern, mobilei2v_pattern

RESULTS = Path(__file__).resolve().parent / "results" / "diffusers-latency.json"

# Caption tokens fed to cross-attention (SANA's text encoder gives at most 300).
TEXT_TOKENS = 300

# SANA-Video's transformer at MobileI2V's shape: 16 heads x 72 (hidden 1152), 16 layers,
# 128 latent channels, patch 1 (the 3 x 23 x 40 latent grid is the token grid), GLU MBConv
# ratio 2.5; cross-attention of the same width over Gemma-2 2B caption states (2304).
SANA_VIDEO_MOBILEI2V = {
    "in_channels": 128,
    "out_channels": 128,
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "num_layers": 16,
    "num_cross_attention_heads": 16,
    "cross_attention_head_dim": 72,
    "cross_attention_dim": 1152,
    "caption_channels": 2304,
    "mlp_ratio": 2.5,
    "patch_size": [1, 1, 1],
    "qk_norm": "rms_norm_across_heads",
}

# The same model at a toy size, for `--size tiny` and the tests.
SANA_VIDEO_TINY = {
    **SANA_VIDEO_MOBILEI2V,
    "in_channels": 4,
    "out_channels": 4,
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "num_layers": 2,
    "num_cross_attention_heads": 2,
    "cross_attention_head_dim": 12,
    "cross_attention_dim": 24,
    "caption_channels": 8,
}

SIZES = {
    # name: (diffusers config, our preset, grid, text tokens)
    "full": (SANA_VIDEO_MOBILEI2V, "mobilei2v", (3, 23, 40), TEXT_TOKENS),
    "tiny": (SANA_VIDEO_TINY, "tiny", (2, 3, 4), 5),
}


# -- models and inputs ------------------------------------------------------------------


def model_class(name: str) -> type:
    """The diffusers model class `name` ("SanaVideoTransformer3DModel" or
    "diffusers:SanaVideoTransformer3DModel"); one this module cannot feed is refused."""
    if not isinstance(name, str):
        raise TypeError(f"model must be a diffusers class name, got {type(name).__name__}")
    cls_name = name.removeprefix("diffusers:")
    if cls_name not in INPUTS:
        raise ValueError(
            f"model must be diffusers:CLASS with CLASS one of {', '.join(INPUTS)} (the models "
            f"whose inputs this builds), got {name!r}"
        )
    try:
        import diffusers
    except ImportError as e:
        raise ValueError(
            f"model {name!r} needs diffusers (pip install 'mobileattn[diffusers]'): {e}"
        ) from None
    return getattr(diffusers, cls_name)


def load_config(config: dict | str | os.PathLike, cls: type) -> dict:
    """A model config: a dict or a JSON file holding one, with keys `cls` takes (keys that
    start with "_", such as the Hub's "_class_name", are dropped). Unknown keys are refused,
    not ignored as diffusers' from_config would."""
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config: no such file {str(path)!r}")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"config: {str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"config must be a JSON object of {cls.__name__}'s arguments, "
            f"got {type(config).__name__}"
        )
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ValueError(
            f"config: {cls.__name__} takes no {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(accepted))}"
        )
    return config


def build_model(cls: type, config: dict, seed: int = 0, device: str = "cpu") -> nn.Module:
    """`cls` from `config` with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return cls.from_config(config).to(device).eval()


def _patch(config, n: int) -> tuple[int, ...]:
    p = config.get("patch_size", 1)
    p = (p,) * n if isinstance(p, int) else tuple(p)
    if len(p) != n:
        raise ValueError(f"config: patch_size must have {n} entries, got {config['patch_size']!r}")
    return p


def _sana_video_inputs(model, grid, text_tokens, gen):
    c = model.config
    pt, ph, pw = _patch(c, 3)
    t, h, w = grid
    x = torch.randn(1, c.in_channels, t * pt, h * ph, w * pw, generator=gen)
    return (
        x,
        torch.randn(1, text_tokens, c.caption_channels, generator=gen),
        torch.full((1,), 500.0),
    )


def _sana_inputs(model, grid, text_tokens, gen):
    c = model.config
    (p,) = _patch(c, 1)
    t, h, w = grid
    if t != 1:
        raise ValueError(
            f"grid: {type(model).__name__} is an image model, so T must be 1, got {grid}"
        )
    x = torch.randn(1, c.in_channels, h * p, w * p, generator=gen)
    return (
        x,
        torch.randn(1, text_tokens, c.caption_channels, generator=gen),
        torch.full((1,), 500.0),
    )


# Model class -> f(model, grid, text_tokens, generator) -> forward's positional inputs for a
# token grid (T, H, W), batch 1.
INPUTS: dict[str, Callable] = {
    "SanaVideoTransformer3DModel": _sana_video_inputs,
    "SanaTransformer2DModel": _sana_inputs,
}


def example_inputs(
    model: nn.Module, grid, text_tokens: int = TEXT_TOKENS, seed: int = 0, device="cpu"
):
    """Seeded inputs of `model.forward` for token grid (T, H, W): latent, caption states of
    `text_tokens` tokens, timestep 500."""
    grid = check_grid(grid)
    name = type(model).__name__
    if name not in INPUTS:
        raise ValueError(f"model: no input builder for {name}; known: {', '.join(INPUTS)}")
    if isinstance(text_tokens, bool) or not isinstance(text_tokens, int) or text_tokens < 1:
        raise ValueError(f"text_tokens must be a positive int, got {text_tokens!r}")
    gen = torch.Generator().manual_seed(seed)
    return tuple(x.to(device) for x in INPUTS[name](model, grid, text_tokens, gen))


# -- blocks ---------------------------------------------------------------------------


class _Captured(BaseException):
    """Stops the forward once the first block's arguments are read."""


def first_block_call(model: nn.Module, inputs: tuple) -> dict[str, Any]:
    """The arguments (by name, hidden_states included) the model passes its first block
    with self-attention, read from a real forward stopped at that block."""
    block = self_attention_blocks(model)[0].module
    sig = inspect.signature(block.forward)
    call = {}

    def grab(module, args, kwargs):
        call.update(sig.bind(*args, **kwargs).arguments)
        raise _Captured

    handle = block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(*inputs)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not call:
        raise ValueError(f"model: {type(model).__name__}'s forward never called its first block")
    return call


class _Slot:
    """Where a captured call held a tensor: the index of that tensor among the inputs."""

    def __init__(self, index: int):
        self.index = index


def _flatten(obj, tensors: list):
    """obj with every tensor replaced by its index in `tensors` (appended), through
    tuples, lists and dicts."""
    if isinstance(obj, torch.Tensor):
        tensors.append(obj.detach().clone())
        return _Slot(len(tensors) - 1)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_flatten(o, tensors) for o in obj)
    if isinstance(obj, dict):
        return {k: _flatten(v, tensors) for k, v in obj.items()}
    return obj


def _fill(obj, tensors):
    if isinstance(obj, _Slot):
        return tensors[obj.index]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_fill(o, tensors) for o in obj)
    if isinstance(obj, dict):
        return {k: _fill(v, tensors) for k, v in obj.items()}
    return obj


class BlockStack(nn.Module):
    """Blocks run in order on hidden_states, each called with the other arguments the model
    passes its first block. Those arguments' tensors are forward's inputs x0, x1, ... (in
    the order `inputs()` gives them), so an exporter keeps them as graph inputs rather than
    constants it could fold (cross-attention keys of constant caption states, say); the
    exporter names graph inputs after forward's parameters, so they are spelled out."""

    SLOTS = 8

    def __init__(self, blocks: Sequence[nn.Module], call: dict[str, Any]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        rest = {k: v for k, v in call.items() if k != "hidden_states"}
        self._tensors: list[torch.Tensor] = []
        self.template = _flatten(rest, self._tensors)
        self.hidden = call["hidden_states"].detach().clone()
        if len(self._tensors) > self.SLOTS:
            raise ValueError(
                f"model: its blocks take {len(self._tensors)} tensors besides hidden_states; "
                f"BlockStack passes at most {self.SLOTS}"
            )

    def inputs(self) -> tuple[torch.Tensor, ...]:
        return (self.hidden, *self._tensors)

    def forward(
        self, hidden_states, x0=None, x1=None, x2=None, x3=None, x4=None, x5=None, x6=None, x7=None
    ):
        kwargs = _fill(self.template, (x0, x1, x2, x3, x4, x5, x6, x7))
        for block in self.blocks:
            hidden_states = block(hidden_states, **kwargs)
            if not isinstance(hidden_states, torch.Tensor):
                raise ValueError(
                    f"model: its blocks return {type(hidden_states).__name__}, not the hidden "
                    "states tensor; BlockStack times blocks that return a tensor"
                )
        return hidden_states


def shared_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose parameters and buffers are the original's (shared,
    not copied): another attention pattern over the same weights."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


def _without_blocks(model: nn.Module) -> nn.Module:
    """A shared-weight copy of `model` whose block lists are emptied: its forward runs
    everything but the blocks (the overhead row)."""
    out = shared_copy(model)
    for block in self_attention_blocks(model):
        owner_name = block.name.rpartition(".")[0]
        parent_name, _, list_attr = owner_name.rpartition(".")
        blocks = out.get_submodule(owner_name) if owner_name else None
        if not isinstance(blocks, nn.ModuleList):
            raise ValueError(
                f"model: block {block.name!r} is not in an nn.ModuleList, so the non-block "
                "parts cannot be timed apart"
            )
        setattr(out.get_submodule(parent_name) if parent_name else out, list_attr, nn.ModuleList())
    return out


def _key(cls, config, grid, backend, text_tokens, **more) -> dict:
    import diffusers

    return {
        "model": f"diffusers:{cls.__name__}",
        "config": config,
        "grid": list(grid),
        "backend": backend,
        "text_tokens": text_tokens,
        **more,
        "runtime": runtime_info(backend),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


# -- tables ---------------------------------------------------------------------------


def block_table(
    model: str | type,
    config: dict | str | os.PathLike,
    grid=(3, 23, 40),
    backend: str = "torch-cpu",
    variants: Sequence[str] | None = None,
    repeats: int = 7,
    warmup: int = 1,
    stack: int = STACK,
    text_tokens: int = TEXT_TOKENS,
    progress: bool = True,
    measure: Callable | None = None,
) -> dict:
    """Per-block latency of a diffusers model for each zoo variant (its self-attention set
    by attention_zoo.diffusers.set_attention) and of the non-block overhead, all timed
    interleaved in `repeats` rounds. The same format as bench.latency.block_table ("variants"
    rows with median_ms / ci_low_ms / ci_high_ms / p10_ms / p90_ms, "overhead", "depth",
    "N", "stack", "backend"), so bench.latency.per_block_latency and predict_ms read it.

    model: a diffusers class or its name ("diffusers:SanaVideoTransformer3DModel");
    config: its config (dict or JSON file); grid: the token grid (T, H, W)."""
    check_backend(backend)
    cls = model_class(model) if isinstance(model, str) else model
    config = load_config(config, cls)
    grid = check_grid(grid)
    names = list(az.VARIANTS) if variants is None else [az.get(v).name for v in variants]
    device = "cuda" if backend == "cuda" else "cpu"
    measure = measure or no_cache
    net = build_model(cls, config, device=device)
    depth = len(self_attention_blocks(net))
    if isinstance(stack, bool) or not isinstance(stack, int) or not 1 <= stack <= depth:
        raise ValueError(f"stack must be an int in [1, depth={depth}], got {stack!r}")
    inputs = example_inputs(net, grid, text_tokens, device=device)
    key = _key(
        cls,
        config,
        grid,
        backend,
        text_tokens,
        variants=names,
        repeats=repeats,
        warmup=warmup,
        stack=stack,
    )

    def run_table():
        call = first_block_call(net, inputs)
        firsts = [b.module for b in self_attention_blocks(net)[:stack]]
        runners = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in tqdm(
                names, desc=f"build blocks ({backend})", disable=not progress, leave=False
            ):
                blocks = shared_copy(nn.ModuleList(firsts))
                set_attention(blocks, name)
                module = BlockStack(blocks, call)
                runners[name] = make_runner(module, module.inputs(), backend, Path(tmp))
            runners["__overhead__"] = make_runner(_without_blocks(net), inputs, backend, Path(tmp))
            return time_runners(
                runners, backend, warmup, repeats, progress, f"block latency ({backend})"
            )

    times, cached = measure("diffusers-blocks", key, run_table)
    rows = per_block_rows(times, names, stack)
    return {
        "what": f"per-block latency (each variant timed as a stack of {stack} blocks)",
        "model": key["model"],
        "config": config,
        "grid": list(grid),
        "N": math.prod(grid),
        "backend": backend,
        "runtime": key["runtime"],
        "depth": depth,
        "stack": stack,
        "text_tokens": text_tokens,
        "variants": rows,
        "overhead": ms_row(times["__overhead__"]),
        "cached": cached,
        "measured_as": f"blocks 0..{stack - 1} of the model with its weights, called with "
        "the arguments the model passes its first block, interleaved rounds",
    }


def model_table(
    model: str | type,
    config: dict | str | os.PathLike,
    grid=(3, 23, 40),
    backend: str = "torch-cpu",
    patterns: Sequence = ("softmax", "L*7,S,L*7,S", "relu_linear"),
    blocks: dict | None = None,
    repeats: int = 5,
    warmup: int = 1,
    text_tokens: int = TEXT_TOKENS,
    progress: bool = True,
    measure: Callable | None = None,
) -> dict:
    """Whole-model latency (one forward, batch 1) of a diffusers model for each attention
    pattern (set_attention patterns, one variant per block), all patterns timed
    interleaved over the same weights; with a block table, the prediction overhead + sum of
    block latencies and its error next to each."""
    check_backend(backend)
    cls = model_class(model) if isinstance(model, str) else model
    config = load_config(config, cls)
    grid = check_grid(grid)
    device = "cuda" if backend == "cuda" else "cpu"
    measure = measure or no_cache
    net = build_model(cls, config, device=device)
    inputs = example_inputs(net, grid, text_tokens, device=device)
    nets = {}
    for p in patterns:
        m = set_attention(shared_copy(net), p)  # a bad pattern fails before any timing
        nets.setdefault(attention_pattern(m), m)
    key = _key(
        cls,
        config,
        grid,
        backend,
        text_tokens,
        patterns=[list(a) for a in nets],
        repeats=repeats,
        warmup=warmup,
    )

    def run_table():
        runners = {}
        with tempfile.TemporaryDirectory() as tmp:
            for names, m in tqdm(
                nets.items(), desc=f"build models ({backend})", disable=not progress, leave=False
            ):
                runners[format_pattern(names)] = make_runner(m, inputs, backend, Path(tmp))
            return time_runners(
                runners, backend, warmup, repeats, progress, f"model latency ({backend})"
            )

    times, cached = measure("diffusers-models", key, run_table)
    rows = []
    for names in nets:
        name = format_pattern(names)
        row = {"pattern": name, "attention": list(names), **ms_row(times[name])}
        if blocks is not None:
            row["predicted_ms"] = predict_ms(blocks, names)
            row["prediction_error"] = relative_error(row["predicted_ms"], row["median_ms"])
        rows.append(row)
    return {
        "what": "whole-model latency, one forward, batch 1, patterns interleaved",
        "model": key["model"],
        "config": config,
        "grid": list(grid),
        "backend": backend,
        "runtime": key["runtime"],
        "text_tokens": text_tokens,
        "cached": cached,
        "models": rows,
    }


# -- the closing-note run ---------------------------------------------------------------

VARIANTS = ("softmax", "relu_linear")
BACKENDS = ("torch-cpu", "onnxruntime-cpu")


def compare(
    size: str = "full",
    backends: Sequence[str] = BACKENDS,
    repeats: int = 7,
    model_repeats: int = 3,
    progress: bool = True,
) -> dict:
    """The SANA-Video-shaped diffusers model and our preset of the same size (SIZES[size]),
    block and whole-model tables on each backend, in one run: softmax, relu_linear and the
    7:1 pattern (blocks 8 and 16 softmax at depth 16)."""
    from bench import latency

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    config, preset, grid, text_tokens = SIZES[size]
    depth = config["num_layers"]
    patterns = ("softmax", format_pattern(mobilei2v_pattern(depth)), "relu_linear")
    load = [os.getloadavg()[0]]
    result = {
        "what": "a SANA-Video-shaped diffusers transformer with zoo attention beside our "
        f"{preset} preset, block and whole-model latency, same run",
        **machine_block(),
        "size": size,
        "grid": list(grid),
        "diffusers_model": "diffusers:SanaVideoTransformer3DModel",
        "diffusers_config": config,
        "preset": preset,
        "patterns": list(patterns),
        "runs": {},
    }
    cls = model_class("SanaVideoTransformer3DModel")
    for backend in backends:
        check_backend(backend)
        run = {}
        blocks = block_table(
            cls,
            config,
            grid,
            backend,
            VARIANTS,
            repeats,
            text_tokens=text_tokens,
            progress=progress,
        )
        run["diffusers"] = {
            "blocks": blocks,
            "models": model_table(
                cls,
                config,
                grid,
                backend,
                patterns,
                blocks,
                model_repeats,
                text_tokens=text_tokens,
                progress=progress,
            ),
        }
        ours = latency.block_table(preset, grid, backend, VARIANTS, repeats, progress=progress)
        run["ours"] = {
            "blocks": ours,
            "models": latency.model_table(
                preset, grid, backend, patterns, ours, model_repeats, progress=progress
            ),
        }
        load.append(os.getloadavg()[0])
        result["runs"][backend] = run
    result["load_average_1min"] = {"start": load[0], "after_each_backend": load[1:]}
    result["summary"] = summary_rows(result)
    return result


def summary_rows(result: dict) -> list[dict]:
    """One row per (backend, model, pattern): measured whole-model ms with its interval,
    the block-sum prediction, and the per-block ms of softmax and relu_linear."""
    rows = []
    for backend, run in result["runs"].items():
        for who, tables in run.items():
            per = {r["variant"]: r for r in tables["blocks"]["variants"]}
            for m in tables["models"]["models"]:
                rows.append(
                    {
                        "backend": backend,
                        "model": who,
                        "pattern": m["pattern"],
                        "median_ms": m["median_ms"],
                        "ci_low_ms": m["ci_low_ms"],
                        "ci_high_ms": m["ci_high_ms"],
                        "predicted_ms": m.get("predicted_ms"),
                        "block_softmax_ms": per["softmax"]["median_ms"],
                        "block_relu_linear_ms": per["relu_linear"]["median_ms"],
                        "overhead_ms": tables["blocks"]["overhead"]["median_ms"],
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", choices=tuple(SIZES), default="full", help="full (default) or tiny"
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated backends")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per block table")
    parser.add_argument("--model-repeats", type=int, default=3, help="timed rounds per model table")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON output file (default: {RESULTS}; tiny: diffusers-latency-tiny.json beside it)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from bench.machine import keep_freed_memory

    keep_freed_memory()  # the allocator every timing of ours runs with
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    out = args.out
    if out is None:
        out = RESULTS if args.size == "full" else RESULTS.with_name("diffusers-latency-tiny.json")
    result = compare(args.size, backends, args.repeats, args.model_repeats, not args.no_progress)
    from export.files import write_json

    print(_summary_text(result))
    print(f"wrote {write_json(out, result)}")
    return 0


def _summary_text(result: dict) -> str:
    head = ("backend", "model", "pattern", "ms", "95% CI ms", "sum of blocks ms")
    rows = [
        (
            r["backend"],
            r["model"],
            r["pattern"],
            f"{r['median_ms']:.1f}",
            f"{r['ci_low_ms']:.1f}-{r['ci_high_ms']:.1f}",
            "-" if r["predicted_ms"] is None else f"{r['predicted_ms']:.1f}",
        )
        for r in result["summary"]
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [
        f"grid {'x'.join(map(str, result['grid']))}; fp32 GEMM {result['gemm_gflops']:.1f} "
        f"GFLOP/s; 1-min load average {result['load_average_1min']}",
        *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in (head, *rows)),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
