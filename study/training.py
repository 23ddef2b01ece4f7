"""Flow-matching training of the hybrid DiT on the embedded task: the loss, the timestep
distribution, the schedule, the training loop and the teacher.

The teacher is the `small` preset with softmax in every block, trained with flow matching
(x_t = (1 - t) x_0 + t noise, target v = noise - x_0, logit-normal t) on procedural clips;
frame 0 is the conditioning image, so the loss covers frames 1.. only.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from export.files import atomic_path, write_json
from hybrid_dit import PRESETS, DiTConfig, HybridDiT
from study.cache import code_version
from study.dataset import TaskData, TaskSpec, load_task
from study.evaluate import copy_baseline_psnr, evaluate, fm_loss, sample_psnr
from study.models import TEACHER_PATH, save_model
from study.task import VideoSpec, clip_motion, encode, make_batch

TEACHER_STEPS = 3000  # optimizer steps of the committed teachers
# The code a trained model depends on (its checkpoints are keyed by its hash).
TRAINING_CODE = (
    "attention_zoo",
    "kernels",
    "hybrid_dit",
    "study/task.py",
    "study/dataset.py",
    "study/training.py",
    "study/evaluate.py",
)
TEACHER_EMA = 0.999


def logit_normal(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.sigmoid(torch.randn(n, generator=generator))


def draw_t(cfg, n: int, generator: torch.Generator) -> torch.Tensor:
    """Timesteps where a model is used: logit-normal for a flow model (as it is trained),
    uniform over its grid t = 1 - i / K (i < K) for a K-step student (cfg.sample_steps)."""
    k = getattr(cfg, "sample_steps", None)
    if k is None:
        return logit_normal(n, generator)
    i = torch.randint(0, k, (n,), generator=generator)
    return 1.0 - i.float() / k


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


class ClipStream:
    """Fresh training clips for every step: clip seeds 2 * (start + i), i = 0, 1, ... (even
    seeds only, so never a held-out clip), each with its own motion score, rendered and
    encoded on demand. The task is procedural, so a model never sees a clip twice."""

    def __init__(self, video: VideoSpec, start: int = 0):
        self.video, self.next = video, start

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0 (n, C, T, h, w) latents, motion (n,)) of the next n clips."""
        seeds = [2 * (self.next + i) for i in range(n)]
        self.next += n
        motion = [clip_motion(s) for s in seeds]
        v = self.video
        frames = make_batch(seeds, motion, v.frames, v.height, v.width)
        return encode(frames, v.factor), torch.tensor(motion, dtype=torch.float32)


def train(
    model: HybridDiT,
    data: TaskData | None,
    steps: int,
    batch: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    teacher: HybridDiT | None = None,
    params=None,
    progress: bool = True,
    desc: str = "train",
    stream: ClipStream | None = None,
    ema: float = 0.0,
    checkpoint: Path | None = None,
    checkpoint_every: int = 200,
    eval_every: int = 0,
    on_eval=None,
    checkpoint_key: dict | None = None,
    extra_state: dict | None = None,
) -> list[float]:
    """Trains `model` with flow matching, on fresh clips from `stream` when given, else on
    `data`'s fixed training clips; with a teacher, the target is the teacher's velocity
    instead (output distillation). AdamW, linear warm-up then cosine decay, gradients
    clipped to norm 1. ema > 0 keeps an exponential moving average of the weights and loads
    it into `model` at the end. checkpoint: a file to save state to every
    `checkpoint_every` steps (atomically) and to resume from, only when its
    `checkpoint_key` (everything the run depends on) is the same; `extra_state`, a dict,
    is saved with it and restored in place. on_eval(step, model, ema state or None) is
    called every `eval_every` steps. Returns every step's loss."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps}, batch={batch}")
    if stream is None and data is None:
        raise ValueError("train needs data (fixed clips) or a stream (fresh clips)")
    gen = torch.Generator().manual_seed(seed)
    params = list(model.parameters()) if params is None else list(params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    averaged = {k: v.detach().clone() for k, v in model.state_dict().items()} if ema else None
    warmup = max(1, steps // 20)
    start, losses, elapsed = 0, [], 0.0
    state = None
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state.get("key") != json.loads(json.dumps(checkpoint_key, default=str)):
            state = None  # another run's checkpoint: start afresh, it is overwritten
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, losses, averaged = state["step"], state["losses"], state["ema"]
        elapsed = state.get("elapsed", 0.0)
        if stream is not None:
            stream.next = state["stream_next"]
        if extra_state is not None:
            extra_state.update(state.get("extra", {}))
    t_start = time.perf_counter() - elapsed
    model.train()
    bar = tqdm(
        range(start, steps), desc=desc, disable=not progress, leave=False, initial=start,
        total=steps,
    )  # fmt: skip
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        if stream is not None:
            x0, motion = stream.batch(batch)
        else:
            idx = torch.randint(0, data.train_x.shape[0], (batch,), generator=gen)
            x0, motion = data.train_x[idx], data.train_motion[idx]
        t = logit_normal(batch, gen) if teacher is None else draw_t(teacher.cfg, batch, gen)
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
        if averaged is not None:
            decay = min(ema, (1 + step) / (10 + step))  # warm-up: early weights fade fast
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    if v.dtype.is_floating_point:
                        averaged[k].lerp_(v, 1 - decay)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.4f}")
        if on_eval is not None and eval_every and (step + 1) % eval_every == 0:
            on_eval(step + 1, model, averaged)
            model.train()
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            state = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "step": step + 1,
                "losses": losses,
                "ema": averaged,
                "stream_next": None if stream is None else stream.next,
                "elapsed": time.perf_counter() - t_start,  # wall time so far, resumes included
                "key": json.loads(json.dumps(checkpoint_key, default=str)),
                "extra": extra_state or {},
            }
            with atomic_path(checkpoint) as tmp:
                torch.save(state, tmp)
    if averaged is not None:
        model.load_state_dict(averaged)
    model.eval()
    train.last_elapsed = time.perf_counter() - t_start
    return losses


def teacher_config() -> DiTConfig:
    """The teacher's shape: the `small` preset with softmax in every block."""
    return PRESETS["small"].with_attention("softmax")


def train_teacher(
    out: str | Path = TEACHER_PATH,
    steps: int = TEACHER_STEPS,
    batch: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    spec: TaskSpec | None = None,
    command: str = "",
    progress: bool = True,
    cfg: DiTConfig | None = None,
    ema: float = TEACHER_EMA,
    fresh: bool = True,
    checkpoint_every: int = 200,
    eval_every: int = 500,
) -> dict:
    """Trains a teacher (default shape: teacher_config()) from scratch, seeded, and writes
    it with a JSON sidecar that records the command, the config, the task, the training
    time and the held-out quality at 2, 4 and 20 Euler steps (and copying frame 0).

    The recipe (chosen by short probes, README "Teachers"): adaLN-Zero initialisation, a
    fresh procedural clip for every example (`fresh`; no fixed epoch set), AdamW with
    warm-up and cosine decay, gradient clipping, and an EMA of the weights (`ema`). The
    seed fixes the initialisation, the noise, the timesteps and the clip stream (clips
    2 * (seed * 10**7 + i): disjoint streams for different seeds, never a held-out clip).
    A run resumes from its checkpoint beside `out` after a kill."""
    spec = TaskSpec() if spec is None else spec
    torch.manual_seed(seed)
    data = load_task(spec, progress=progress)
    cfg = teacher_config() if cfg is None else cfg
    if cfg.in_channels != spec.video.latent_channels:
        raise ValueError(
            f"cfg.in_channels ({cfg.in_channels}) must equal the task's latent channels "
            f"({spec.video.latent_channels})"
        )
    model = HybridDiT(cfg)
    model.reset_parameters(adaln_zero=True)
    stream = ClipStream(spec.video, start=seed * 10**7) if fresh else None
    out = Path(out)
    ckpt = out.with_name(f".{out.stem}.checkpoint.pt")
    # held-out PSNR at 20 Euler steps during training (EMA weights) and the time spent
    # measuring it; both saved with the checkpoint, so a resumed run keeps them
    state = {"curve": [], "eval_seconds": 0.0}

    def on_eval(step, live, averaged):
        t_eval = time.perf_counter()
        probe = HybridDiT(cfg).eval()
        probe.load_state_dict(averaged if averaged is not None else live.state_dict())
        state["curve"].append({"step": step, "psnr_20": sample_psnr(probe, data, 20)})
        if progress:
            tqdm.write(
                f"step {step}: held-out PSNR at 20 steps {state['curve'][-1]['psnr_20']:.2f} dB"
            )
        state["eval_seconds"] += time.perf_counter() - t_eval

    key = {
        "cfg": cfg.to_dict(),
        "task": spec.to_dict(),
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "ema": ema,
        "fresh": fresh,
        "eval_every": eval_every,
        "code": code_version(TRAINING_CODE),
    }

    losses = train(
        model, data, steps, batch=batch, lr=lr, seed=seed, progress=progress,
        desc="train teacher", stream=stream, ema=ema, checkpoint=ckpt,
        checkpoint_every=checkpoint_every, eval_every=eval_every, on_eval=on_eval,
        checkpoint_key=key, extra_state=state,
    )  # fmt: skip
    train_s = train.last_elapsed - state["eval_seconds"]  # held-out evaluations excluded
    quality = evaluate(model, data)
    quality["psnr_at_steps"] = {
        str(k): sample_psnr(model, data, k) for k in sorted({2, 4, 20, spec.sample_steps})
    }
    quality["copy_first_frame_psnr"] = copy_baseline_psnr(data)
    meta = {
        "command": command,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "ema": ema,
        "fresh_clips": fresh,
        "init": "adaLN-Zero",
        "task": spec.to_dict(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_seconds": train_s,
        "final_train_loss": sum(losses[-50:]) / len(losses[-50:]),
        "heldout": quality,
        "psnr_curve": state["curve"],
    }
    save_model(model, out, meta)
    sidecar = {"config": model.cfg.to_dict(), **meta, "loss_curve_every_10": losses[::10]}
    write_json(out.with_suffix(".json"), sidecar)
    ckpt.unlink(missing_ok=True)
    return meta
