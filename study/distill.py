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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hybrid_dit import HybridDiT
from study.dataset import TaskData
from study.evaluate import evaluate
from study.models import fingerprint
from study.training import logit_normal, lr_at, train


@dataclass
class BlockActivations:
    """The teacher's activations at every block boundary for a fixed set of training
    batches: xs[b][i] is the input of block i (xs[b][depth] the last block's output)."""

    xs: list[list[torch.Tensor]]  # [batch][boundary] -> (B, N, C)
    conds: list[torch.Tensor]  # [batch] -> (B, T, 6, C)
    grid: tuple[int, int, int]


@torch.no_grad()
def record_activations(
    teacher: HybridDiT, data: TaskData, batches: int = 8, batch: int = 8, seed: int = 1
) -> BlockActivations:
    """Runs the teacher on `batches` random noisy training batches and records what
    every block sees and returns."""
    gen = torch.Generator().manual_seed(seed)
    teacher.eval()
    xs, conds = [], []
    for _ in range(batches):
        idx = torch.randint(0, data.train_x.shape[0], (batch,), generator=gen)
        x0, motion = data.train_x[idx], data.train_motion[idx]
        t = logit_normal(batch, gen)
        noise = torch.randn(x0.shape, generator=gen)
        tt = t.view(-1, 1, 1, 1, 1)
        p = teacher.prepare((1 - tt) * x0 + tt * noise, t, x0[:, :, 0], motion)
        x = p.x
        bounds = [x]
        for block in teacher.blocks:
            x = block(x, p.cond, p.rope, p.grid)
            bounds.append(x)
        xs.append(bounds)
        conds.append(p.cond)
    return BlockActivations(xs=xs, conds=conds, grid=data.grid)


def swapped_model(teacher: HybridDiT, pattern) -> HybridDiT:
    """A model with `pattern` as its attention and the teacher's weights."""
    cfg = teacher.cfg.with_attention(pattern)
    model = HybridDiT(cfg)
    model.load_state_dict(teacher.state_dict())
    model.eval()
    return model


def distill_block(
    model: HybridDiT,
    index: int,
    acts: BlockActivations,
    steps: int = 60,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Trains block `index` of `model` (in place) to map the teacher's recorded inputs of that
    block to the teacher's outputs. Returns the output MSE before and after."""
    block = model.blocks[index]
    rope = model.rope(acts.grid)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(block.parameters(), lr=lr, weight_decay=0.0)

    def mse(b):
        out = block(acts.xs[b][index], acts.conds[b], rope, acts.grid)
        return F.mse_loss(out, acts.xs[b][index + 1])

    with torch.no_grad():
        before = sum(mse(b).item() for b in range(len(acts.xs))) / len(acts.xs)
    block.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, max(1, steps // 10))
        b = int(torch.randint(0, len(acts.xs), (1,), generator=gen))
        loss = mse(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    block.eval()
    with torch.no_grad():
        after = sum(mse(b).item() for b in range(len(acts.xs))) / len(acts.xs)
    return {"block_mse_before": before, "block_mse_after": after}


def _no_cache(stage, key, fn):
    return fn(), False


def swap_table(
    teacher: HybridDiT,
    data: TaskData,
    variants,
    acts: BlockActivations,
    blocks=None,
    distill_steps: int = 60,
    measure=None,
    progress: bool = True,
    distilled: dict | None = None,
) -> dict:
    """For each block and each variant, swap that block's attention, distil the block
    against the teacher and measure held-out quality. `distilled`, a dict, receives each
    distilled block's weights under (block, variant, steps). `measure(stage, key, fn)` may wrap
    each entry (the study's cache). Returns a JSON-able dict with the teacher's quality
    and one entry per (block, variant): loss, PSNR and their deltas to the teacher."""
    measure = measure or _no_cache
    base_key = {
        "teacher": fingerprint(teacher),
        "task": data.spec.to_dict(),
        "distill_steps": distill_steps,
        "torch": torch.__version__,
    }
    teacher_q, t_cached = measure("quality-teacher", base_key, lambda: evaluate(teacher, data))
    depth = teacher.cfg.depth
    blocks = list(range(depth)) if blocks is None else list(blocks)
    jobs = [(i, v) for i in blocks for v in variants if v != teacher.cfg.attention[i]]
    entries = []
    for i, v in tqdm(jobs, desc="quality: swap one block", disable=not progress, leave=False):

        def one(i=i, v=v):
            pattern = list(teacher.cfg.attention)
            pattern[i] = v
            model = swapped_model(teacher, pattern)
            fit = distill_block(model, i, acts, steps=distill_steps, seed=i)
            if distilled is not None:
                distilled[i, v, distill_steps] = copy.deepcopy(model.blocks[i].state_dict())
            return {**fit, **evaluate(model, data)}

        res, cached = measure("quality-swap", {**base_key, "block": i, "variant": v}, one)
        entries.append(
            {
                "block": i,
                "variant": v,
                **res,
                "delta_loss": res["loss"] - teacher_q["loss"],
                "delta_psnr": res["psnr"] - teacher_q["psnr"],
                "cached": cached,
            }
        )
    return {
        "what": "held-out quality with one block's attention swapped and distilled",
        "teacher": {**teacher_q, "attention": list(teacher.cfg.attention), "cached": t_cached},
        "variants": list(variants),
        "blocks": blocks,
        "entries": entries,
    }


def quality_loss_table(table: dict, depth: int) -> list[dict[str, float]]:
    """The swap table as one {variant: predicted loss increase} dict per block, the
    teacher's own variant at 0 (the search's quality input)."""
    out = [{table["teacher"]["attention"][i]: 0.0} for i in range(depth)]
    for e in table["entries"]:
        out[e["block"]][e["variant"]] = e["delta_loss"]
    return out


def build_config(
    teacher: HybridDiT,
    data: TaskData,
    pattern,
    acts: BlockActivations,
    distill_steps: int = 60,
    joint_steps: int = 0,
    progress: bool = False,
    distilled: dict | None = None,
) -> tuple[HybridDiT, dict]:
    """Builds `pattern` for real: every swapped block distilled as in the swap table (same
    seeds, so the same weights; taken from `distilled` when swap_table left them there),
    then optionally `joint_steps` of whole-model output
    distillation against the teacher. Returns (model, held-out quality)."""
    model = swapped_model(teacher, pattern)
    for i, (mine, theirs) in enumerate(
        zip(model.cfg.attention, teacher.cfg.attention, strict=True)
    ):
        if mine != theirs:
            known = None if distilled is None else distilled.get((i, mine, distill_steps))
            if known is not None:
                model.blocks[i].load_state_dict(known)
            else:
                distill_block(model, i, acts, steps=distill_steps, seed=i)
    if joint_steps:
        train(
            model,
            data,
            joint_steps,
            lr=2e-4,
            teacher=teacher,
            seed=1,
            progress=progress,
            desc="joint distillation",
        )
    return model, evaluate(model, data)
