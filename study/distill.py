"""Block-wise distillation and the per-block quality table.

A swap replaces one block's attention variant and distils that block alone against the
teacher (block-wise distillation, as in LANA): the block sees the teacher's recorded
inputs and learns to reproduce the teacher block's outputs. Parameters do not depend on the
variant, so the swapped block starts from the teacher's weights. Block-wise distillation
makes one swap cost a few block passes instead of full-model training, and it lets a
multi-block config reuse each block's distilled weights. Quality is measured on held-out
clips (study.evaluate).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from bench.machine import no_cache
from hybrid_dit import HybridDiT
from study.dataset import TaskData
from study.evaluate import evaluate_sampler
from study.models import fingerprint
from study.training import draw_t, lr_at, train

DISTILL_LR = 1e-3  # peak learning rate of block distillation
# Steps of block distillation: where the held-out block error plateaus (120-200 steps in
# bench/results/distill-curve.json, `make distill-curve`).
DISTILL_STEPS = 200


@dataclass
class BlockActivations:
    """A model's activations at every block boundary for a fixed set of batches:
    xs[b][i] is the input of block i (xs[b][depth] the last block's output). `key` records
    how they were made (for cache keys)."""

    xs: list[list[torch.Tensor]]  # [batch][boundary] -> (B, N, C)
    conds: list[torch.Tensor]  # [batch] -> (B, T, 6, C)
    grid: tuple[int, int, int]
    key: dict = field(default_factory=dict)


@torch.no_grad()
def record_activations(
    model: HybridDiT,
    data: TaskData,
    batches: int = 8,
    batch: int = 8,
    seed: int = 1,
    heldout: bool = False,
) -> BlockActivations:
    """Runs `model` on `batches` batches of training clips (or of the held-out clips, for
    measuring a distilled block on inputs it was not fitted on) and records what every
    block sees and returns, at the inputs the model is used on: a flow model at noisy clips
    x_t = (1 - t) x0 + t noise with logit-normal t (as it is trained); a K-step student on
    its own sampling trajectory from noise, at its step b mod K for batch b (its inputs at
    t < 1 are its own earlier steps' output, not an interpolation)."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    pool_x, pool_m = (
        (data.test_x, data.test_motion) if heldout else (data.train_x, data.train_motion)
    )
    k = model.cfg.sample_steps
    xs, conds = [], []
    for b in range(batches):
        idx = torch.randint(0, pool_x.shape[0], (batch,), generator=gen)
        x0, motion = pool_x[idx], pool_m[idx]
        noise = torch.randn(x0.shape, generator=gen)
        ff = x0[:, :, 0]
        if k is None:
            t = draw_t(model.cfg, batch, gen)
            tt = t.view(-1, 1, 1, 1, 1)
            x_t = (1 - tt) * x0 + tt * noise
        else:
            x_t = noise.clone()
            x_t[:, :, 0] = ff
            for j in range(b % k):  # the student's own Euler steps up to step b mod k
                v = model(x_t, torch.full((batch,), 1.0 - j / k), ff, motion)
                x_t = x_t - v / k
                x_t[:, :, 0] = ff
            t = torch.full((batch,), 1.0 - (b % k) / k)
        p = model.prepare(x_t, t, ff, motion)
        x = p.x
        bounds = [x]
        for block in model.blocks:
            x = block(x, p.cond, p.rope, p.grid)
            bounds.append(x)
        xs.append(bounds)
        conds.append(p.cond)
    key = activations_key(model, batches, batch, seed, heldout)
    return BlockActivations(xs=xs, conds=conds, grid=data.grid, key=key)


def activations_key(model, batches: int, batch: int, seed: int, heldout: bool) -> dict:
    """How record_activations makes its activations (part of the cache keys of what is
    distilled from them), known without recording them."""
    k = model.cfg.sample_steps
    return {
        "batches": batches,
        "batch": batch,
        "seed": seed,
        "heldout": heldout,
        "inputs": "noisy clips" if k is None else f"own {k}-step trajectory",
    }


class LazyActivations:
    """record_activations(model, data, ...) recorded on first use: its `key` is known at
    once, so a fully cached study never records what it does not distil."""

    def __init__(self, model, data, batches: int = 8, batch: int = 8, seed: int = 1):
        self._args = (model, data, batches, batch, seed)
        self.key = activations_key(model, batches, batch, seed, False)
        self._acts: BlockActivations | None = None

    def __getattr__(self, name):  # xs, conds, grid
        if name.startswith("_"):
            raise AttributeError(name)
        if self._acts is None:
            model, data, batches, batch, seed = self._args
            self._acts = record_activations(model, data, batches, batch, seed)
        return getattr(self._acts, name)


def swapped_model(base: HybridDiT, pattern) -> HybridDiT:
    """A model with `pattern` as its attention and the base model's weights."""
    cfg = base.cfg.with_attention(pattern)
    model = HybridDiT(cfg)
    model.load_state_dict(base.state_dict())
    model.eval()
    return model


def block_error(model: HybridDiT, index: int, acts: BlockActivations) -> float:
    """MSE of block `index`'s output against the recorded outputs, over all batches."""
    block = model.blocks[index]
    rope = model.rope(acts.grid)
    with torch.no_grad():
        errs = [
            F.mse_loss(
                block(acts.xs[b][index], acts.conds[b], rope, acts.grid), acts.xs[b][index + 1]
            )
            for b in range(len(acts.xs))
        ]
    return float(sum(e.item() for e in errs) / len(errs))


def distill_block(
    model: HybridDiT,
    index: int,
    acts: BlockActivations,
    steps: int = DISTILL_STEPS,
    lr: float = DISTILL_LR,
    seed: int = 0,
    check: BlockActivations | None = None,
    curve_every: int = 0,
) -> dict:
    """Trains block `index` of `model` (in place) to map the base model's recorded inputs of
    that block to its outputs (AdamW, warm-up, cosine decay). Returns the output MSE before
    and after on the fitted batches, and with `check` (activations of held-out clips) the
    held-out error every `curve_every` steps as "curve"."""
    block = model.blocks[index]
    rope = model.rope(acts.grid)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(block.parameters(), lr=lr, weight_decay=0.0)
    before = block_error(model, index, acts)
    curve = []
    if check is not None and curve_every:
        curve.append({"step": 0, "heldout_block_mse": block_error(model, index, check)})
    block.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, max(1, steps // 10))
        b = int(torch.randint(0, len(acts.xs), (1,), generator=gen))
        out = block(acts.xs[b][index], acts.conds[b], rope, acts.grid)
        loss = F.mse_loss(out, acts.xs[b][index + 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if check is not None and curve_every and (step + 1) % curve_every == 0:
            block.eval()
            curve.append({"step": step + 1, "heldout_block_mse": block_error(model, index, check)})
            block.train()
    block.eval()
    res = {"block_mse_before": before, "block_mse_after": block_error(model, index, acts)}
    if curve:
        res["curve"] = curve
    return res


def swap_table(
    base: HybridDiT,
    data: TaskData,
    variants,
    acts: BlockActivations,
    steps: int,
    blocks=None,
    distill_steps: int = DISTILL_STEPS,
    distill_lr: float = DISTILL_LR,
    measure=None,
    progress: bool = True,
    distilled: dict | None = None,
) -> dict:
    """For each block and each variant, swap that block's attention, distil the block
    against `base` (a teacher, or a K-step student) and measure held-out quality sampled
    with `steps` steps (study.evaluate.evaluate_sampler: pixel MSE and PSNR of frames 1..,
    and the flow-matching loss for a flow model), before and after distillation.
    `distilled`, a dict, receives each distilled block's weights under
    (block, variant, distill_steps). `measure(stage, key, fn)` may wrap each entry (the
    study's cache); every hyperparameter is in the keys. Returns a JSON-able dict with the
    base model's quality and one entry per (block, variant) with the deltas to the base."""
    measure = measure or no_cache
    eval_key = {
        "base": fingerprint(base),
        "task": data.spec.to_dict(),
        "steps": steps,
        "torch": torch.__version__,
    }
    base_key = {
        **eval_key,
        "distill_steps": distill_steps,
        "distill_lr": distill_lr,
        "activations": acts.key,
    }
    base_q, b_cached = measure(
        "quality-base", eval_key, lambda: evaluate_sampler(base, data, steps)
    )
    depth = base.cfg.depth
    blocks = list(range(depth)) if blocks is None else list(blocks)
    jobs = [(i, v) for i in blocks for v in variants if v != base.cfg.attention[i]]
    entries = []
    for i, v in tqdm(
        jobs, desc=f"quality at {steps} steps: swap one block", disable=not progress, leave=False
    ):

        def one(i=i, v=v):
            pattern = list(base.cfg.attention)
            pattern[i] = v
            model = swapped_model(base, pattern)
            raw = evaluate_sampler(model, data, steps)
            fit = distill_block(model, i, acts, steps=distill_steps, lr=distill_lr, seed=i)
            if distilled is not None:
                distilled[i, v, distill_steps] = copy.deepcopy(model.blocks[i].state_dict())
            return {**fit, "undistilled": raw, **evaluate_sampler(model, data, steps)}

        res, cached = measure("quality-swap", {**base_key, "block": i, "variant": v}, one)
        entries.append(
            {
                "block": i,
                "variant": v,
                **res,
                **deltas(res, base_q),
                "undistilled_delta_mse": res["undistilled"]["mse"] - base_q["mse"],
                "cached": cached,
            }
        )
    return {
        "what": f"held-out quality at {steps} steps with one block's attention swapped and "
        "distilled",
        "steps": steps,
        "base": {
            **base_q,
            "attention": list(base.cfg.attention),
            "sample_steps": base.cfg.sample_steps,
            "cached": b_cached,
        },
        "variants": list(variants),
        "blocks": blocks,
        "distill_steps": distill_steps,
        "entries": entries,
    }


def deltas(q: dict, base: dict) -> dict:
    """Changes of a quality dict against the base: pixel MSE, PSNR and (flow models) loss."""
    out = {"delta_mse": q["mse"] - base["mse"], "delta_psnr": q["psnr"] - base["psnr"]}
    if q.get("loss") is not None and base.get("loss") is not None:
        out["delta_loss"] = q["loss"] - base["loss"]
    return out


def quality_delta_table(
    table: dict, depth: int, metric: str = "delta_mse"
) -> list[dict[str, float]]:
    """The swap table as one {variant: predicted change of `metric`} dict per block, the
    base model's own variant at 0 (the search's quality input)."""
    out = [{table["base"]["attention"][i]: 0.0} for i in range(depth)]
    for e in table["entries"]:
        out[e["block"]][e["variant"]] = e[metric]
    return out


def build_config(
    base: HybridDiT,
    data: TaskData,
    pattern,
    acts: BlockActivations,
    steps: int,
    distill_steps: int = DISTILL_STEPS,
    distill_lr: float = DISTILL_LR,
    joint_steps: int = 0,
    progress: bool = False,
    distilled: dict | None = None,
) -> tuple[HybridDiT, dict]:
    """Builds `pattern` for real on `base`: every swapped block distilled as in the swap
    table (same seeds, so the same weights; taken from `distilled` when swap_table left them
    there), then optionally `joint_steps` of whole-model output distillation against the
    base model. Returns (model, held-out quality sampled with `steps` steps)."""
    model = swapped_model(base, pattern)
    for i, (mine, theirs) in enumerate(zip(model.cfg.attention, base.cfg.attention, strict=True)):
        if mine != theirs:
            known = None if distilled is None else distilled.get((i, mine, distill_steps))
            if known is not None:
                model.blocks[i].load_state_dict(known)
            else:
                distill_block(model, i, acts, steps=distill_steps, lr=distill_lr, seed=i)
    if joint_steps:
        train(
            model, data, joint_steps, lr=2e-4, teacher=base, seed=1, progress=progress,
            desc="joint distillation",
        )  # fmt: skip
    return model, evaluate_sampler(model, data, steps)
