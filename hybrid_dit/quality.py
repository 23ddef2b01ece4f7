"""Quality harness: the teacher, per-block attention swaps distilled from it, and held-out
quality on the embedded image-to-video task (hybrid_dit.data).

* The teacher is the `small` preset with softmax in every block, trained with flow matching
  (x_t = (1 - t) x_0 + t noise, target v = noise - x_0, logit-normal t) on procedural clips;
  frame 0 is the conditioning image, so the loss covers frames 1.. only.
* A swap replaces one block's attention variant and distils that block alone against the
  teacher (block-wise distillation, as in LANA): the block sees the teacher's recorded
  inputs and learns to reproduce the teacher block's outputs. Parameters do not depend on
  the variant, so the swapped block starts from the teacher's weights. Block-wise distillation
  makes one swap cost a few block passes instead of full-model training, and it lets a
  multi-block config reuse each block's distilled weights.
* Quality is measured on held-out clips (odd seeds; training uses even seeds): the
  flow-matching loss at fixed timesteps and noise, and the PSNR of sampled frames 1..
  against the true continuation, in pixel space after the codec's decode.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hybrid_dit.config import PRESETS, DiTConfig
from hybrid_dit.data import (
    DEFAULT_VIDEO,
    VideoSpec,
    clip_motion,
    decode,
    encode,
    make_batch,
    split_seeds,
)
from hybrid_dit.model import HybridDiT, inject_first_frame
from hybrid_dit.sampler import sample
from mobileattn.io import atomic_path, write_json

TEACHER_PATH = Path(__file__).parent / "assets" / "teacher_small.safetensors"


@dataclass(frozen=True)
class TaskSpec:
    """The clips a study trains and measures on."""

    video: VideoSpec = DEFAULT_VIDEO  # clip size and codec factor
    n_train: int = 1024  # training clips (even seeds)
    n_heldout: int = 16  # held-out clips (odd seeds)
    eval_ts: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)  # timesteps of the held-out loss
    sample_steps: int = 4  # Euler steps for the held-out PSNR
    seed: int = 0  # noise of the held-out measurements

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["video"] = self.video.to_dict()
        d["eval_ts"] = list(self.eval_ts)
        return d


@dataclass
class TaskData:
    """Latents and motion scores of the training and held-out clips, plus the held-out
    frames in pixel space and the fixed noise the held-out measurements use."""

    spec: TaskSpec
    train_x: torch.Tensor  # (n_train, C, T, h, w)
    train_motion: torch.Tensor  # (n_train,)
    test_x: torch.Tensor  # (n_heldout, C, T, h, w)
    test_motion: torch.Tensor  # (n_heldout,)
    test_frames: torch.Tensor  # (n_heldout, 3, T, H, W) in [-1, 1]
    eval_noise: torch.Tensor  # (len(eval_ts), n_heldout, C, T, h, w)
    sample_noise: torch.Tensor  # (n_heldout, C, T, h, w)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.test_x.shape[2:])


def load_task(spec: TaskSpec = TaskSpec(), progress: bool = False) -> TaskData:
    """Renders the clips of `spec` (deterministic: a function of the seeds only)."""
    split = split_seeds(spec.n_train, spec.n_heldout)
    v = spec.video

    def clips(seeds, desc):
        out = []
        for i in tqdm(range(0, len(seeds), 64), desc=desc, disable=not progress, leave=False):
            chunk = seeds[i : i + 64]
            out.append(
                make_batch(chunk, [clip_motion(s) for s in chunk], v.frames, v.height, v.width)
            )
        return torch.cat(out)

    train_frames = clips(split.train, "render training clips")
    test_frames = clips(split.heldout, "render held-out clips")
    test_x = encode(test_frames, v.factor)
    gen = torch.Generator().manual_seed(spec.seed)
    eval_noise = torch.randn((len(spec.eval_ts), *test_x.shape), generator=gen)
    sample_noise = torch.randn(test_x.shape, generator=gen)
    return TaskData(
        spec=spec,
        train_x=encode(train_frames, v.factor),
        train_motion=torch.tensor([clip_motion(s) for s in split.train], dtype=torch.float32),
        test_x=test_x,
        test_motion=torch.tensor([clip_motion(s) for s in split.heldout], dtype=torch.float32),
        test_frames=test_frames,
        eval_noise=eval_noise,
        sample_noise=sample_noise,
    )


# -- flow matching ----------------------------------------------------------------------------


def fm_loss(model, x0, motion, t, noise) -> torch.Tensor:
    """Flow-matching loss on frames 1.. (frame 0 is the given first frame)."""
    tt = t.view(-1, 1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    pred = model(x_t, t, x0[:, :, 0], motion)
    return F.mse_loss(pred[:, :, 1:], (noise - x0)[:, :, 1:])


def logit_normal(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.sigmoid(torch.randn(n, generator=generator))


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train(
    model: HybridDiT,
    data: TaskData,
    steps: int,
    batch: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    teacher: HybridDiT | None = None,
    params=None,
    progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Trains `model` with flow matching on the task's training clips; with a teacher, the
    target is the teacher's velocity instead (output distillation). AdamW, linear warm-up
    then cosine decay. Returns the loss of every step."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps}, batch={batch}")
    gen = torch.Generator().manual_seed(seed)
    params = list(model.parameters()) if params is None else list(params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup)
        idx = torch.randint(0, data.train_x.shape[0], (batch,), generator=gen)
        x0, motion = data.train_x[idx], data.train_motion[idx]
        t = logit_normal(batch, gen)
        noise = torch.randn(x0.shape, generator=gen)
        if teacher is None:
            loss = fm_loss(model, x0, motion, t, noise)
        else:
            tt = t.view(-1, 1, 1, 1, 1)
            x_t = (1 - tt) * x0 + tt * noise
            with torch.no_grad():
                target = teacher(x_t, t, x0[:, :, 0], motion)
            pred = model(x_t, t, x0[:, :, 0], motion)
            loss = F.mse_loss(pred[:, :, 1:], target[:, :, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.4f}")
    model.eval()
    return losses


# -- held-out quality -------------------------------------------------------------------------


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB between two tensors of values in a range of
    width `data_range` ([-1, 1] -> 2)."""
    mse = F.mse_loss(a.double(), b.double()).item()
    return float("inf") if mse == 0 else 10 * math.log10(data_range**2 / mse)


@torch.no_grad()
def evaluate(model, data: TaskData) -> dict:
    """Held-out flow-matching loss (fixed t and noise) and PSNR (dB) of sampled frames 1..
    against the true continuation."""
    model.eval()
    losses = []
    for t_val, noise in zip(data.spec.eval_ts, data.eval_noise, strict=True):
        t = torch.full((data.test_x.shape[0],), t_val)
        losses.append(fm_loss(model, data.test_x, data.test_motion, t, noise).item())
    video = sample(
        model,
        data.test_x[:, :, 0],
        data.test_motion,
        data.spec.sample_steps,
        data.grid,
        noise=data.sample_noise,
    )
    frames = decode(video, data.spec.video.factor).clamp(-1, 1)
    return {
        "loss": sum(losses) / len(losses),
        "loss_per_t": losses,
        "psnr": psnr(frames[:, :, 1:], data.test_frames[:, :, 1:]),
    }


# -- block-wise distillation ------------------------------------------------------------------


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
    grid = data.grid
    rope = teacher.rope(grid)
    for _ in range(batches):
        idx = torch.randint(0, data.train_x.shape[0], (batch,), generator=gen)
        x0, motion = data.train_x[idx], data.train_motion[idx]
        t = logit_normal(batch, gen)
        noise = torch.randn(x0.shape, generator=gen)
        tt = t.view(-1, 1, 1, 1, 1)
        x_t, t_frames = inject_first_frame((1 - tt) * x0 + tt * noise, t, x0[:, :, 0])
        cond, _ = teacher.condition(t_frames, motion)
        x = teacher.embed(x_t)
        bounds = [x]
        for block in teacher.blocks:
            x = block(x, cond, rope, grid)
            bounds.append(x)
        xs.append(bounds)
        conds.append(cond)
    return BlockActivations(xs=xs, conds=conds, grid=grid)


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
            g["lr"] = _lr_at(step, steps, lr, max(1, steps // 10))
        b = int(torch.randint(0, len(acts.xs), (1,), generator=gen))
        loss = mse(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    block.eval()
    with torch.no_grad():
        after = sum(mse(b).item() for b in range(len(acts.xs))) / len(acts.xs)
    return {"block_mse_before": before, "block_mse_after": after}


# -- persistence ------------------------------------------------------------------------------


def save_model(model: HybridDiT, path: str | Path, meta: dict | None = None) -> Path:
    """Writes the weights as safetensors (atomically) with the config and `meta` in the
    file's metadata."""
    from safetensors.torch import save_file

    header = {"config": json.dumps(model.cfg.to_dict()), "meta": json.dumps(meta or {})}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)
    return path


def load_model(path: str | Path = TEACHER_PATH, pattern=None) -> tuple[HybridDiT, dict]:
    """Loads a model saved by save_model (default: the committed teacher), optionally with
    another attention pattern. Returns (model in eval mode, meta)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no model at {path}; the teacher is made by `mobileattn train-teacher`"
        )
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        cfg = DiTConfig.from_dict(json.loads(header["config"]))
        meta = json.loads(header.get("meta", "{}"))
        state = load_file(str(path))
    except (KeyError, json.JSONDecodeError, OSError, RuntimeError, SafetensorError) as e:
        raise ValueError(f"{path} is not a mobileattn model file ({e})") from None
    except (TypeError, ValueError) as e:  # a header whose config DiTConfig rejects
        raise ValueError(f"{path} is not a mobileattn model file: its config: {e}") from None
    if pattern is not None:
        cfg = cfg.with_attention(pattern)
    model = HybridDiT(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: the weights do not fit its config ({e})") from None
    model.eval()
    return model, meta


def teacher_config() -> DiTConfig:
    """The teacher's shape: the `small` preset with softmax in every block."""
    return PRESETS["small"].with_attention("softmax")


def train_teacher(
    out: str | Path = TEACHER_PATH,
    steps: int = 1500,
    batch: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    spec: TaskSpec = TaskSpec(),
    command: str = "",
    progress: bool = True,
    cfg: DiTConfig | None = None,
) -> dict:
    """Trains the teacher (default shape: teacher_config()) from scratch, seeded, and writes
    it with a JSON sidecar that records the command, the config, the task and the held-out
    quality."""
    torch.manual_seed(seed)
    data = load_task(spec, progress=progress)
    cfg = teacher_config() if cfg is None else cfg
    if cfg.in_channels != spec.video.latent_channels:
        raise ValueError(
            f"cfg.in_channels ({cfg.in_channels}) must equal the task's latent channels "
            f"({spec.video.latent_channels})"
        )
    model = HybridDiT(cfg)
    losses = train(
        model, data, steps, batch=batch, lr=lr, seed=seed, progress=progress, desc="train teacher"
    )
    quality = evaluate(model, data)
    meta = {
        "command": command,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "task": spec.to_dict(),
        "torch": torch.__version__,
        "final_train_loss": sum(losses[-50:]) / len(losses[-50:]),
        "heldout": quality,
    }
    save_model(model, out, meta)
    sidecar = {"config": model.cfg.to_dict(), **meta, "loss_curve_every_10": losses[::10]}
    write_json(Path(out).with_suffix(".json"), sidecar)
    return meta


# -- the per-block quality table and configs built for real ------------------------------------


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
        "teacher": _fingerprint(teacher),
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


def _fingerprint(model: HybridDiT) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
