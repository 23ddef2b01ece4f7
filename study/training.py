"""Flow-matching training of the hybrid DiT on the embedded task: the loss, the timestep
distribution, the schedule, the training loop and the teacher.

The teacher is the `small` preset with softmax in every block, trained with flow matching
(x_t = (1 - t) x_0 + t noise, target v = noise - x_0, logit-normal t) on procedural clips;
frame 0 is the conditioning image, so the loss covers frames 1.. only.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from export.files import write_json
from hybrid_dit import PRESETS, DiTConfig, HybridDiT
from study.dataset import TaskData, TaskSpec, load_task
from study.evaluate import evaluate, fm_loss
from study.models import TEACHER_PATH, save_model


def logit_normal(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.sigmoid(torch.randn(n, generator=generator))


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
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
            g["lr"] = lr_at(step, steps, lr, warmup)
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


def teacher_config() -> DiTConfig:
    """The teacher's shape: the `small` preset with softmax in every block."""
    return PRESETS["small"].with_attention("softmax")


def train_teacher(
    out: str | Path = TEACHER_PATH,
    steps: int = 1500,
    batch: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    spec: TaskSpec | None = None,
    command: str = "",
    progress: bool = True,
    cfg: DiTConfig | None = None,
) -> dict:
    """Trains the teacher (default shape: teacher_config()) from scratch, seeded, and writes
    it with a JSON sidecar that records the command, the config, the task and the held-out
    quality."""
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
