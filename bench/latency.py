"""Latency tables of the hybrid DiT: per block and per attention variant, and whole models,
on a backend ("torch-cpu", "onnxruntime-cpu", "cuda"), with machine info and the fp32 GEMM
rate measured in the same run.

What a user would ship is what is timed: the zoo's fastest exact implementation on each
backend (`impl="auto"`: SDPA and matmul forms on CPU, Triton on CUDA), onnxruntime through
the one session helper (export.onnx.session: threads matched to torch, spinning off), on
graphs whose softmax attention is onnxruntime's MultiHeadAttention (ORT_ATTENTION).

Every block of a preset has the same shape, so one block per variant stands for every
block index. It is timed inside a stack of `stack` blocks of that variant (distinct
weights), per block = stack time / stack: a block alone sees its input and weights warm in
cache, which a block inside a model does not (the miss a single-block sum makes, measured
in `bench/results/`). The non-block parts (patch embedding, conditioning, final layer) are
timed as `overhead`, so predicted model latency = overhead + the sum of the chosen blocks'
latencies; whole models, timed interleaved, check it.

All candidates of one table are timed in rounds (A B C A B C ...), so drift on a shared
machine hits them alike; every row carries its median, p10-p90 and a bootstrap interval of
the median (bench.stats).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import attention_zoo as az
from bench.machine import (
    Loaded,
    allocator_info,
    available_memory,
    gemm_flops,
    gemm_probe,
    gemm_rate,
    machine_info,
    no_cache,
    ort_gemm_probe,
    time_interleaved,
)
from bench.stats import (
    median_ci,
    ms_row,
    paired_ratio,
    prediction_error_ci,
    rank_correlation,
    relative_error,
    summarize,
)
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
# Untimed runs of every new onnxruntime session before it is timed: its second run is its
# slowest (measured on a Zen 5: mobilei2v 4-block stacks took 1.7-3.5 s, 2.6-4.2 s, then
# 1.35-1.6 s from the third run on; a likely cause, not verified: onnxruntime plans its memory
# pattern on the first run and allocates it on the next), so a session run once untimed was
# timed before its steady state.
ORT_WARM_RUNS = 2
# How the graphs timed on onnxruntime spell softmax attention (export.onnx.to_onnx's
# `attention`): onnxruntime's com.microsoft.MultiHeadAttention, the fastest form there.
# `python -m bench.onnx_softmax --repeats 41` at da97f0c (two mobilei2v softmax blocks at
# 3x23x40, 2-core Xeon, bench/results/onnx-softmax.json): 1051 ms [1038, 1087] vs 1136
# [1112, 1188] for the default MatMul-Softmax-MatMul export (per round 0.911x [0.892,
# 0.941]) and 1137 [1120, 1216] for opset 23's Attention node.
ORT_ATTENTION = "onnxruntime"
# model_table's names for the block stacks it times beside the whole models (same_rounds)
BLOCK_PREFIX = "block:"
# model_table's name for the GEMM probe it times beside the whole models (gemm_probe_n)
GEMM_RUNNER = "__gemm__"


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


# Blocks per timed stack (see the module docstring); 1 times a block alone.
STACK = 2
# Every onnxruntime session timed here takes its activations from the one arena the
# process's sessions share (export.onnx.session's shared_arena, its default): they run one
# at a time, and the arena grows only when a run needs a bigger block than it holds. A
# whole-model session then holds about SESSION_WEIGHT_FACTOR times the model's fp32
# weights (prepacked; the originals are freed), and the shared arena about
# ARENA_WEIGHT_FACTOR times, once. Measured for mobilei2v at 3x23x40 (1.06 GB of weights):
# - bench/results/ab-ort-arena.json: an all-relu_linear session added 2.43 GB, the first
#   on the shared arena, and an all-softmax one after it 2.60 GB, where each with an arena
#   of its own added 2.46 and 3.45 GB;
# - a probe before it, all-softmax first: 1.06 GB then 2.3 GB more on the first runs, and
#   1.05 GB for each session after it, relu_linear or softmax.
# So a smaller run before the largest one can add its block to the arena (here 1.4 GB),
# which the factor covers for one such step. The sessions of one table may take
# SESSION_MEMORY_SHARE of the available memory side by side (bench.machine.available_memory;
# 0.7: eight such sessions need 18.7 GB available, bench.model_cpu's eight patterns in one
# group on a 25 GB machine, where two runs at 0.6 found under 21.8 GB available and made
# groups of seven, one of them 12.2 GB resident with seven sessions built beside its torch
# half's kept heap); past it they are made one at a time, each before its timed call
# (bench.machine.Loaded).
SESSION_WEIGHT_FACTOR = 1.1
ARENA_WEIGHT_FACTOR = 3.5
SESSION_MEMORY_SHARE = 0.7


def model_weight_bytes(cfg: DiTConfig) -> int:
    """Bytes of a model's fp32 weights (counted on the meta device: nothing allocated)."""
    with torch.device("meta"):
        return 4 * sum(p.numel() for p in HybridDiT(cfg).parameters())


def held_group_size(cfg: DiTConfig, available: int | None = None) -> int:
    """How many whole-model onnxruntime sessions of `cfg` fit side by side (hold_sessions),
    at least 1."""
    available = available_memory() if available is None else available
    weight_bytes, n = model_weight_bytes(cfg), 1
    while hold_sessions(n + 1, weight_bytes, available):
        n += 1
    return n


def hold_sessions(n_models: int, weight_bytes: int, available: int | None = None) -> bool:
    """Whether `n_models` onnxruntime sessions of models with `weight_bytes` of weights fit
    in memory side by side (else a table makes them one at a time)."""
    available = available_memory() if available is None else available
    need = (n_models * SESSION_WEIGHT_FACTOR + ARENA_WEIGHT_FACTOR) * weight_bytes
    return need <= SESSION_MEMORY_SHARE * available


class Blocks(nn.Module):
    """A stack of blocks with their RoPE tables and grid baked in: forward(x, cond) runs
    them in order, for timing and for export."""

    def __init__(self, blocks, rope: Rope, grid):
        super().__init__()
        self.blocks, self.grid, self.pairs = nn.ModuleList(blocks), tuple(grid), rope.pairs
        self.register_buffer("cos", rope.cos)
        self.register_buffer("sin", rope.sin)

    def forward(self, x, cond):
        rope = Rope(self.cos, self.sin, self.pairs)
        for block in self.blocks:
            x = block(x, cond, rope, self.grid)
        return x


class Overhead(nn.Module):
    """Everything of the model but its blocks: embedding, conditioning, final layer. The
    block conditioning is returned too, so that no exporter drops it as unused."""

    def __init__(self, model: HybridDiT):
        super().__init__()
        self.model = model

    def forward(self, x_t, t, first_frame, motion):
        p = self.model.prepare(x_t, t, first_frame, motion)
        return self.model.head(p.x, p), p.cond


class BlockClock:
    """Wall-clock seconds of each block inside a torch CPU model's forward, from forward
    hooks around every block (CPU ops run synchronously, so the two stamps bound the
    block's work; the hooks cost two clock reads per block). `calls` holds one list of
    per-block seconds per forward call, in call order."""

    def __init__(self, model: HybridDiT):
        self.calls: list[list[float]] = []
        self._start = 0.0
        model.register_forward_pre_hook(lambda mod, args: self.calls.append([]))
        for block in model.blocks:
            block.register_forward_pre_hook(self._pre)
            block.register_forward_hook(self._post)

    def _pre(self, mod, args):
        self._start = time.perf_counter()

    def _post(self, mod, args, out):
        self.calls[-1].append(time.perf_counter() - self._start)


def make_runner(
    module: nn.Module, inputs: tuple, backend: str, workdir: Path, load_per_call: bool = False
) -> Callable[[], object] | Loaded:
    """A no-argument callable that runs `module(*inputs)` on `backend`. With
    `load_per_call`, an onnxruntime model is exported now but its session is made only
    when timed (bench.machine.Loaded): for whole models, when more than fit side by side
    (hold_sessions).
    Every onnxruntime session is run ORT_WARM_RUNS times untimed when made."""
    module.eval()
    if backend in ("torch-cpu", "cuda"):

        def run():
            with torch.inference_mode():
                return module(*inputs)

        return run
    from export.onnx import input_names, session, to_onnx

    fd, name = tempfile.mkstemp(suffix=".onnx", dir=workdir)
    os.close(fd)
    path = Path(name)
    # weights in a file beside the graph: a 1 GB protobuf takes seconds more to write
    to_onnx(module, inputs, path, external_data=True, attention=ORT_ATTENTION)
    feed = dict(zip(input_names(module, len(inputs)), (i.numpy() for i in inputs), strict=True))

    def load():
        sess = session(path)  # on the shared arena: see SESSION_WEIGHT_FACTOR

        def run():
            return sess.run(None, feed)

        for _ in range(ORT_WARM_RUNS):
            run()
        return run

    # load() warms the session itself, held or made per call alike
    return Loaded(load, warm=0) if load_per_call else load()


def sync_for(backend):
    return torch.cuda.synchronize if backend == "cuda" else None


def runtime_info(backend: str) -> dict:
    """How the backend is configured for these timings (threads, spinning, optimisation)."""
    alloc = allocator_info()
    # the allocator decides how many page faults a torch step takes (keep_freed_memory)
    info = {
        "torch_threads": torch.get_num_threads(),
        "impl": "auto",
        "allocator": alloc["allocator"],
        "keeps_freed_memory": alloc["keeps_freed_memory"],
    }
    if backend == "onnxruntime-cpu":
        import onnxruntime as ort

        from export.onnx import GRAPH_OPTIMIZATION

        info.update(
            onnxruntime=ort.__version__,
            intra_op_threads=torch.get_num_threads(),
            inter_op_threads=1,
            allow_spinning=0,
            graph_optimization=GRAPH_OPTIMIZATION,
            shared_arena=True,
            attention=ORT_ATTENTION,
        )
    return info


def time_runners(runners: dict, backend: str, warmup: int, repeats: int, progress: bool, desc: str):
    """bench.machine.time_interleaved over `runners` (made by make_runner) with a progress
    bar and the backend's synchronisation. The `warmup` rounds stay on onnxruntime too,
    though make_runner has run each session ORT_WARM_RUNS times: a session built before
    others were (whole models: ~1 GB of export each) ran its first timed call up to 1.9x
    its median (a mobilei2v 2-block softmax stack, 1381 vs 745 ms; whole models 1.15x) in
    a make run on a 2-core Zen 3 VM that timed no warmup round."""
    with progress_bar(progress, desc) as bar:
        return time_interleaved(
            runners, warmup, repeats, sync_for(backend), progress=progress_callback(bar)
        )


def per_block_rows(times: dict, names, stack: int) -> list[dict]:
    """Rows of a block table from the timings of stacks of `stack` blocks: per block = the
    stack's time / stack, interval included."""
    rows = []
    for name in names:
        t = times[name]
        per = {k: t[k] / stack for k in ("median", "p10", "p90", "ci_low", "ci_high")}
        per.update(repeats=t["repeats"], times=[x / stack for x in t["times"]])
        rows.append({"variant": name, **ms_row(per), "stack_median_ms": 1e3 * t["median"]})
    return rows


def progress_bar(progress: bool, desc: str):
    return tqdm(desc=desc, disable=not progress, leave=False, unit="call")


def progress_callback(bar):
    def update(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    return update


def check_stack(stack, depth: int) -> None:
    if isinstance(stack, bool) or not isinstance(stack, int) or not 1 <= stack <= depth:
        raise ValueError(f"stack must be an int in [1, depth={depth}], got {stack!r}")


def block_runners(
    cfg: DiTConfig,
    grid,
    backend: str,
    names: Sequence[str],
    stack: int,
    workdir: Path,
    progress: bool = True,
) -> dict:
    """make_runner runners of a stack of `stack` blocks per variant in `names` (blocks
    0..stack-1 of a model whose blocks all have one shape, seeded alike) and of the
    non-block overhead ("__overhead__"), for block_table and model_table's same-round
    block timings."""
    device = "cuda" if backend == "cuda" else "cpu"
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, math.prod(grid), cfg.hidden, generator=gen).to(device)
    cond = (0.1 * torch.randn(1, grid[0], 6, cfg.hidden, generator=gen)).to(device)
    runners = {}
    for name in tqdm(names, desc=f"build blocks ({backend})", disable=not progress, leave=False):
        c = cfg.with_attention(name)
        torch.manual_seed(0)
        blocks = [DiTBlock(c, i).to(device) for i in range(stack)]
        module = Blocks(blocks, rope_tables(c, grid, device=device), grid)
        runners[name] = make_runner(module, (x, cond), backend, workdir)
    torch.manual_seed(0)
    model = HybridDiT(cfg.with_attention("softmax")).to(device)
    inputs = example_inputs(cfg, grid, device=device)
    runners["__overhead__"] = make_runner(Overhead(model), inputs, backend, workdir)
    return runners


def block_table(
    preset: str | DiTConfig = "mobilei2v",
    grid=(3, 23, 40),
    backend: str = "torch-cpu",
    variants: Sequence[str] | None = None,
    repeats: int = 7,
    warmup: int = 1,
    stack: int = STACK,
    progress: bool = True,
    measure: Callable | None = None,
) -> dict:
    """Latency of one block per variant (timed in a stack of `stack`, see the module
    docstring) and of the non-block overhead, all interleaved in `repeats` rounds.

    `measure(stage, key, fn) -> (value, cached)` may wrap the measurement (the study's
    cache): the whole interleaved table is one entry. Returns a JSON-able dict."""
    check_backend(backend)
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    grid = check_grid(grid)
    names = list(az.VARIANTS) if variants is None else [az.get(v).name for v in variants]
    check_stack(stack, cfg.depth)
    measure = measure or no_cache
    n = math.prod(grid)
    key = {
        "preset": cfg.to_dict(),
        "grid": list(grid),
        "backend": backend,
        "variants": names,
        "repeats": repeats,
        "warmup": warmup,
        "stack": stack,
        "runtime": runtime_info(backend),
        "torch": torch.__version__,
    }

    def run_table():
        with tempfile.TemporaryDirectory() as tmp:
            runners = block_runners(cfg, grid, backend, names, stack, Path(tmp), progress)
            return time_runners(
                runners, backend, warmup, repeats, progress, f"block latency ({backend})"
            )

    times, cached = measure("blocks", key, run_table)
    rows = per_block_rows(times, names, stack)
    return {
        "what": f"per-block latency (each variant timed as a stack of {stack} blocks)",
        "preset": cfg.to_dict(),
        "grid": list(grid),
        "N": n,
        "backend": backend,
        "runtime": key["runtime"],
        "depth": cfg.depth,
        "stack": stack,
        "variants": rows,
        "overhead": ms_row(times["__overhead__"]),
        "cached": cached,
        "measured_as": f"blocks 0..{stack - 1} of a model whose blocks all have one shape, "
        "interleaved rounds",
    }


def model_table(
    preset: str | DiTConfig = "mobilei2v",
    grid=(3, 23, 40),
    backend: str = "torch-cpu",
    patterns: Sequence = ("softmax", "L*7,S,L*7,S", "relu_linear"),
    blocks: dict | None = None,
    repeats: int = 5,
    warmup: int = 1,
    progress: bool = True,
    measure: Callable | None = None,
    same_rounds: Sequence[str] = (),
    stack: int = STACK,
    block_clock: bool = False,
    gemm_probe_n: int | None = None,
) -> dict:
    """Whole-model latency (one denoising step, batch 1) of each pattern, all patterns timed
    interleaved in `repeats` rounds with the same weights; with a block table, the
    prediction overhead + sum of block latencies and its error next to each. On
    onnxruntime, when the sessions would not fit side by side (hold_sessions), one is held
    at a time: made, run ORT_WARM_RUNS times untimed and timed once per round
    (bench.machine.Loaded).

    `same_rounds`: variants whose `stack`-block stacks (block_runners) and the overhead
    are timed in the same rounds as the whole models, as the table "same_rounds_blocks";
    each model then also gets the block sum from those timings ("same_rounds_predicted_ms",
    "same_rounds_error"; every error comes with its bootstrap interval, "*_error_ci",
    bench.latency.error_ci, resampling whole rounds for the same-round sums). A block table
    made minutes earlier carries the machine's drift between the two measurements (on a
    2-core cloud VM, blocks measured 15-30% apart from one process to the next); timed in
    the same rounds, the two see the same machine.

    `block_clock` (torch-cpu only): every block of every whole model is also timed inside
    the model's own timed calls (BlockClock), so each model row gets "in_model": its
    blocks' latency per variant and the rest of the step (whole - blocks, per call): what
    a block costs inside a full-depth model, beside what a stack measures.

    `gemm_probe_n`: an (n x n) fp32 GEMM through the backend's own matmul kernels
    (bench.machine.gemm_probe, ort_gemm_probe on onnxruntime) is timed in the same rounds,
    as the table's "gemm" (its rate and per-round times), and each model row gets
    "fraction_of_gemm": its achieved GFLOP/s over the GEMM rate of its own round, median
    over rounds [interval] (bench.stats.paired_ratio), so a machine whose speed drifts
    during the minutes of a run scales both alike."""
    check_backend(backend)
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    grid = check_grid(grid)
    same_rounds = [az.get(v).name for v in same_rounds]
    if same_rounds:
        check_stack(stack, cfg.depth)
    if gemm_probe_n is not None and (
        isinstance(gemm_probe_n, bool) or not isinstance(gemm_probe_n, int) or gemm_probe_n < 1
    ):  # checked before the minutes of building and exporting the models
        raise ValueError(f"gemm_probe_n must be a positive int or None, got {gemm_probe_n!r}")
    if block_clock and backend != "torch-cpu":
        raise ValueError(
            f"block_clock needs backend 'torch-cpu' (synchronous ops), got {backend!r}"
        )
    device = "cuda" if backend == "cuda" else "cpu"
    measure = measure or no_cache
    configs = []
    for p in patterns:
        c = cfg.with_attention(p)
        if c not in configs:
            configs.append(c)
    one_at_a_time = False
    if backend == "onnxruntime-cpu":
        one_at_a_time = not hold_sessions(len(configs), model_weight_bytes(cfg))
    key = {
        "preset": cfg.to_dict(),
        "grid": list(grid),
        "backend": backend,
        "sessions": "one at a time" if one_at_a_time else "held",
        "patterns": [list(c.attention) for c in configs],
        "repeats": repeats,
        "warmup": warmup,
        "runtime": runtime_info(backend),
        "torch": torch.__version__,
    }
    if same_rounds:
        key.update(same_rounds=same_rounds, stack=stack)
    if block_clock:
        key.update(block_clock=True)
    if gemm_probe_n is not None:
        key.update(gemm_probe=gemm_probe_n)

    def run_table():
        torch.manual_seed(0)
        base = HybridDiT(cfg).to(device).eval()
        weights = base.state_dict()  # every pattern runs these weights, shared, not copied
        inputs = example_inputs(cfg, grid, device=device)
        runners, clocks = {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            if same_rounds:
                made = block_runners(cfg, grid, backend, same_rounds, stack, Path(tmp), progress)
                runners.update({BLOCK_PREFIX + k: r for k, r in made.items()})
            for c in tqdm(
                configs, desc=f"build models ({backend})", disable=not progress, leave=False
            ):
                with torch.device("meta"):
                    model = HybridDiT(c)
                model.load_state_dict(weights, assign=True)
                name = format_pattern(c.attention)
                if block_clock:
                    clocks[name] = BlockClock(model)
                runners[name] = make_runner(
                    model, inputs, backend, Path(tmp), load_per_call=one_at_a_time
                )
            if gemm_probe_n is not None:
                runners[GEMM_RUNNER] = backend_gemm_probe(backend, gemm_probe_n)
            times = time_runners(
                runners, backend, warmup, repeats, progress, f"model latency ({backend})"
            )
        for name, clock in clocks.items():  # the timed calls come after the warmup rounds
            times[name]["block_seconds"] = clock.calls[warmup:]
        return times

    times, cached = measure("models", key, run_table)
    gemm = None
    if gemm_probe_n is not None:
        g = times[GEMM_RUNNER]
        gemm = {
            "what": f"({gemm_probe_n} x {gemm_probe_n}) fp32 GEMM through {backend}'s matmul, "
            "timed in the same rounds as the whole models",
            "n": gemm_probe_n,
            "gflops": gemm_flops(gemm_probe_n) / g["median"] / 1e9,
            **ms_row(g),
        }
    same = None
    if same_rounds:
        t = {k[len(BLOCK_PREFIX) :]: v for k, v in times.items() if k.startswith(BLOCK_PREFIX)}
        same = {
            "what": f"per-block latency (stacks of {stack}) timed in the same rounds as the "
            "whole models",
            "stack": stack,
            "depth": cfg.depth,
            "variants": per_block_rows(t, same_rounds, stack),
            "overhead": ms_row(t["__overhead__"]),
        }
    rows = []
    for c in configs:
        name = format_pattern(c.attention)
        row = {"pattern": name, "attention": list(c.attention), **ms_row(times[name])}
        flops = model_flops(c, grid)["total"]
        row["gflops"] = flops / (row["median_ms"] * 1e-3) / 1e9
        if gemm is not None:
            # round r: (flops / t_r) / (gemm_flops / t_gemm_r)
            f = paired_ratio(g["times"], times[name]["times"], flops / gemm_flops(gemm_probe_n))
            row["fraction_of_gemm"] = f["median"]
            row["fraction_of_gemm_ci"] = [f["ci_low"], f["ci_high"]]
        if blocks is not None:
            row["predicted_ms"] = predict_ms(blocks, c.attention)
            row["prediction_error"] = relative_error(row["predicted_ms"], row["median_ms"])
            row["prediction_error_ci"] = error_ci(blocks, c.attention, row)
        if same is not None and set(c.attention) <= set(same_rounds):
            row["same_rounds_predicted_ms"] = predict_ms(same, c.attention)
            row["same_rounds_error"] = relative_error(
                row["same_rounds_predicted_ms"], row["median_ms"]
            )
            row["same_rounds_error_ci"] = error_ci(same, c.attention, row, paired=True)
        if "block_seconds" in times[name]:
            row["in_model"] = in_model_row(c.attention, times[name])
        rows.append(row)
    return {
        "what": "whole-model latency, one denoising step, batch 1, patterns interleaved",
        "measured_as": f"one onnxruntime session at a time, made and run {ORT_WARM_RUNS} "
        "times untimed before each timed call"
        if one_at_a_time
        else f"{warmup} untimed round(s), then timed rounds"
        + (
            f" (each session run {ORT_WARM_RUNS} times untimed when made)"
            if backend == "onnxruntime-cpu"
            else ""
        ),
        "preset": cfg.to_dict(),
        "grid": list(grid),
        "backend": backend,
        "runtime": key["runtime"],
        "cached": cached,
        "models": rows,
        "same_rounds_blocks": same,
        "gemm": gemm,
    }


def backend_gemm_probe(backend: str, n: int) -> Callable[[], object]:
    """bench.machine.gemm_probe through `backend`'s own matmul kernels: torch's on
    torch-cpu and cuda, onnxruntime's MLAS on onnxruntime-cpu (a session from
    export.onnx.session, configured as the models' sessions are)."""
    check_backend(backend)
    if backend == "onnxruntime-cpu":
        return ort_gemm_probe(n)
    return gemm_probe(n, "cuda" if backend == "cuda" else "cpu")


def in_model_row(attention: Sequence[str], t: dict) -> dict:
    """A model's blocks timed inside its own calls (model_table's block_clock): per
    variant, the latency of its blocks over every block and timed call; the rest of the
    step (embedding, conditioning, final layer, the glue between blocks) per call as the
    whole call minus its blocks."""
    calls = t["block_seconds"]
    if len(calls) != len(t["times"]) or any(len(c) != len(attention) for c in calls):
        raise ValueError(
            f"block clock: {len(calls)} calls of {[len(c) for c in calls]} blocks for "
            f"{len(t['times'])} timed calls of {len(attention)} blocks"
        )
    blocks = {
        v: ms_row(summarize([c[i] for c in calls for i, a in enumerate(attention) if a == v]))
        for v in dict.fromkeys(attention)
    }
    rest = summarize([w - sum(c) for w, c in zip(t["times"], calls, strict=True)])
    return {"blocks": blocks, "rest": ms_row(rest)}


def host_table(
    preset: str | DiTConfig = "mobilei2v", grid=(3, 23, 40), repeats: int = 7, warmup: int = 1
) -> dict:
    """The host loop's own cost (export.host.sample, numpy, what ships around the Core ML
    step) at a grid, with the program stubbed by an instant zero velocity: timed for 1 and
    for 4 steps, interleaved, it splits into a fixed per-clip part (initial noise, first
    frame) and a per-step part (layout in and out, sinusoid features, the Euler update).
    Returns medians and intervals in ms."""
    import numpy as np

    from export import host
    from export.bundle import step_spec

    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    grid = check_grid(grid)
    spec = step_spec(cfg, grid, 1, dtype="float32")
    ff = np.zeros(spec.frame_shape, dtype=np.float32)
    out_shape = spec.shapes()[host.V]

    def predict(feeds):
        return {host.V: np.zeros(out_shape, dtype=np.float32)}

    runs = {k: (lambda k=k: host.sample(predict, spec, ff, 0.5, steps=k, seed=0)) for k in (1, 4)}
    t = time_interleaved({str(k): fn for k, fn in runs.items()}, warmup, repeats)
    one, four = t["1"]["median"], t["4"]["median"]
    per_step = (four - one) / 3
    return {
        "what": "host loop (export.host.sample) with the program stubbed: fixed + steps x per-step",
        "grid": list(grid),
        "fixed_ms": 1e3 * (one - per_step),
        "per_step_ms": 1e3 * per_step,
        "one_step": ms_row(t["1"]),
        "four_steps": ms_row(t["4"]),
    }


def predict_ms(blocks: dict, attention: Sequence[str]) -> float:
    """overhead + sum of the block latencies of `attention` (one variant per block)."""
    per = {r["variant"]: r["median_ms"] for r in blocks["variants"]}
    missing = sorted(set(attention) - set(per))
    if missing:
        raise ValueError(f"the block table has no latency for {', '.join(missing)}")
    return blocks["overhead"]["median_ms"] + sum(per[v] for v in attention)


def error_ci(
    blocks: dict, attention: Sequence[str], measured: dict, paired: bool = False
) -> list[float] | None:
    """The 95% bootstrap interval of predict_ms(blocks, attention) / measured - 1, from the
    repeats of the overhead, of each block latency and of the measured row
    (bench.stats.prediction_error_ci); None where a table kept no repeats. `paired`: the
    blocks were timed in the measured row's own rounds (model_table's same_rounds), so
    whole rounds are resampled together."""
    per = {r["variant"]: r.get("times_ms") for r in blocks["variants"]}
    counts = {v: attention.count(v) for v in dict.fromkeys(attention)}
    parts = [(1.0, blocks["overhead"].get("times_ms")), *((n, per[v]) for v, n in counts.items())]
    if not measured.get("times_ms") or any(not ts for _, ts in parts):
        return None
    return list(prediction_error_ci(parts, measured["times_ms"], paired=paired))


def scaled_leave_one_out(table: dict) -> dict:
    """A predictor that keeps the block table's relative costs and calibrates one number,
    the in-model factor f: predicted = overhead + f * sum of the table's block latencies,
    with f the median of (model - overhead) / block sum over the *other* whole models (the
    other patterns: copies of one pattern timed in several groups are held out together).
    One parameter, so it predicts patterns and variants no whole model was built of (the
    search's candidates) from the few the study builds anyway. Held-out errors per model."""
    per = {r["variant"]: r["median_ms"] for r in table["blocks"]["variants"]}
    overhead = table["blocks"]["overhead"]["median_ms"]
    models = table["models"]["models"]
    sums = [sum(per[v] for v in m["attention"]) for m in models]
    factors = [(m["median_ms"] - overhead) / s for m, s in zip(models, sums, strict=True)]
    rows = []
    for i, m in enumerate(models):
        # a pattern timed in several groups is held out with all its copies
        others = [f for o, f in zip(models, factors, strict=True) if o["pattern"] != m["pattern"]]
        if not others:
            continue
        pred = overhead + float(np.median(others)) * sums[i]
        rows.append({"pattern": m["pattern"], "predicted_ms": pred,
                     "error": relative_error(pred, m["median_ms"])})  # fmt: skip
    meas = [m["median_ms"] for m in models if any(r["pattern"] == m["pattern"] for r in rows)]
    return {
        "what": "overhead + f * block sum, f the median in-model factor of the other models",
        "factor": float(np.median(factors)) if factors else None,
        "factors": dict(zip((m["pattern"] for m in models), factors, strict=True)),
        "rows": rows,
        "configs": len({r["pattern"] for r in rows}),
        "worst_error": max((abs(r["error"]) for r in rows), default=None),
        "spearman": rank_correlation([r["predicted_ms"] for r in rows], meas),
    }


def full_depth_predictions(models: Sequence[dict], depth: int) -> list[dict]:
    """What a block costs inside a full-depth model, from whole models of one variant: the
    latency of a mix is predicted as sum over variants of (blocks of v / depth) x the
    one-variant model of v (overhead + depth x an in-model block of v, so the overhead
    cancels), and its error is checked on every mix whose variants all have a one-variant
    model (those models are the calibration, not checked). `models`: model_table rows
    (attention, median_ms, times_ms; "group" where models were timed in several groups).
    The interval resamples whole rounds (paired) where the mix and its one-variant models
    were timed in the same rounds (one group, the same number of repeats), else each
    sample on its own; "paired" says which. Where a one-variant model was timed in several
    groups, a mix takes the copy from its own group (else the first). Paired rows also get
    "error_per_round": the median over rounds of each round's own error (the prediction
    from that round's one-variant models over that round's mix), with its interval, a
    diagnostic in which drift that moves a whole round alike cancels; "error" compares
    medians taken over all rounds, as every other predictor here does."""
    single: dict[str, list[dict]] = {}
    for m in models:
        if len(set(m["attention"])) == 1:
            single.setdefault(m["attention"][0], []).append(m)

    def reference(v, group):
        return next((s for s in single[v] if s.get("group") == group), single[v][0])

    rows = []
    for m in models:
        counts = {v: m["attention"].count(v) for v in dict.fromkeys(m["attention"])}
        if len(counts) < 2 or not set(counts) <= set(single):
            continue
        if len(m["attention"]) != depth:
            raise ValueError(f"{m['pattern']}: {len(m['attention'])} blocks, expected {depth}")
        parts = [(n / depth, reference(v, m.get("group"))) for v, n in counts.items()]
        pred = sum(w * s["median_ms"] for w, s in parts)
        timed = bool(m.get("times_ms")) and all(s.get("times_ms") for _, s in parts)
        paired = timed and all(
            s.get("group") == m.get("group") and len(s["times_ms"]) == len(m["times_ms"])
            for _, s in parts
        )
        ci = None
        if timed:
            ci = list(
                prediction_error_ci(
                    [(w, s["times_ms"]) for w, s in parts], m["times_ms"], paired=paired
                )
            )
        row = {
            "pattern": m["pattern"],
            "median_ms": m["median_ms"],
            "predicted_ms": pred,
            "error": relative_error(pred, m["median_ms"]),
            "error_ci": ci,
            "paired": paired,
        }
        if paired:
            per_round = [
                sum(w * s["times_ms"][r] for w, s in parts) / t - 1
                for r, t in enumerate(m["times_ms"])
            ]
            row["error_per_round"] = float(np.median(per_round))
            row["error_per_round_ci"] = list(median_ci(per_round))
        rows.append(row)
    return rows


def per_block_latency(blocks: dict) -> list[dict[str, float]]:
    """The block table expanded to one {variant: ms} dict per block index, for the search."""
    per = {r["variant"]: r["median_ms"] for r in blocks["variants"]}
    return [dict(per) for _ in range(blocks["depth"])]


def machine_block(device: str = "cpu") -> dict:
    """Machine info plus the fp32 GEMM rate measured now (the roofline scale)."""
    return {"machine": machine_info(), "gemm_gflops": gemm_rate(device=device)}
