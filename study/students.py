"""Few-step students of a teacher: K-step samplers distilled by regression onto the teacher's
many-step ODE solution.

The recipe, and why this one. MobileI2V's public code ships no video distillation; the
paper's regression + adversarial + distribution-matching mix (like DMD2, SANA-Sprint)
needs a fake-score network and a GAN head, which are fragile at our scale; consistency
models and MeanFlow need forward-mode derivatives (JVP) through attention, which torch's
fused SDPA and our kernels do not provide. The least fragile recipe at small scale is the
one progressive distillation and reflow rest on: regress the student onto the teacher's
deterministic ODE map. Here, for a pool of (first frame, motion, noise) triples, the
teacher's Euler solution with `teacher_steps` steps (20) is recorded at t = j / lcm(K, 4)
(a grid holding the student's t_i = 1 - i / K, shared by K = 1, 2 and 4); the K-step
student, initialised from the teacher, learns for each of its steps the teacher's secant
velocity

    v*_i = (x(t_{i+1}) - x(t_i)) / (t_{i+1} - t_i)    at input x(t_i), timestep t_i,

on frames 1.. (frame 0 is the given first frame), so that one of its Euler steps lands where
the teacher's many steps land. Its config records `sample_steps = K`, so
`hybrid_dit.sample(student, first_frame, motion, steps=K, grid)` samples it exactly as a
teacher is sampled, and refuses any other step count.

Work is resumable: the trajectory pool is cached on disk (keyed by the teacher's weights,
the pool settings and this code), training checkpoints atomically every `checkpoint_every`
steps and a re-run resumes from the last one; the student file is written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from export.files import atomic_path, remove_stale_temps, write_json
from hybrid_dit import HybridDiT
from study.cache import code_version
from study.dataset import TaskData, TaskSpec, load_task
from study.evaluate import sample_psnr
from study.models import fingerprint, load_model, save_model
from study.task import VideoSpec, clip_motion, encode, make_batch, split_seeds
from study.training import TRAINING_CODE, lr_at


@dataclass(frozen=True)
class StudentSpec:
    """How a K-step student is made. Every field goes into the cache keys."""

    steps: int  # K: the student's sampling steps; must divide teacher_steps
    teacher_steps: int = 20  # the teacher's Euler steps for the target ODE solution
    pool: int = 1024  # recorded teacher trajectories (fresh training seeds)
    pool_grid: int = 4  # trajectories are recorded at t = j / lcm(K, pool_grid): one pool
    # serves the students of K = 1, 2 and 4
    train_steps: int = 1200  # optimizer steps
    batch: int = 8
    lr: float = 3e-4
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "teacher_steps", "pool", "train_steps", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"StudentSpec.{name} must be an int >= 1, got {v!r}")
        if self.teacher_steps % self.steps:
            raise ValueError(
                f"StudentSpec.steps ({self.steps}) must divide teacher_steps "
                f"({self.teacher_steps}) so the student's grid lies on the teacher's"
            )
        if self.teacher_steps % self.keep:
            raise ValueError(
                f"StudentSpec.pool_grid: lcm(steps, pool_grid) = {self.keep} must divide "
                f"teacher_steps ({self.teacher_steps})"
            )
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"StudentSpec.lr must be a positive number, got {self.lr!r}")

    @property
    def keep(self) -> int:
        """The recording grid of the trajectory pool: t = 1 - j / keep, j = 0..keep."""
        return math.lcm(self.steps, self.pool_grid)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The code a student and its trajectory pool depend on (their cache keys hold its hash).
STUDENT_CODE = (*TRAINING_CODE, "study/students.py")


# -- the teacher's trajectories ---------------------------------------------------------------


@torch.no_grad()
def teacher_trajectory(
    teacher: HybridDiT, first_frame, motion, noise, teacher_steps: int, keep: int
) -> torch.Tensor:
    """The teacher's Euler solution from `noise` at t = 1 (frame 0 re-injected at every
    step, as hybrid_dit.sample does), recorded at t = 1 - j / keep for j = 0..keep:
    (keep + 1, B, C, T, H, W)."""
    if teacher_steps % keep:
        raise ValueError(f"keep ({keep}) must divide teacher_steps ({teacher_steps})")
    b = first_frame.shape[0]
    x = noise.clone()
    x[:, :, 0] = first_frame
    ts = torch.linspace(1.0, 0.0, teacher_steps + 1, dtype=torch.float64)
    every = teacher_steps // keep
    states = [x.clone()]
    for i in range(teacher_steps):
        t = torch.full((b,), float(ts[i]))
        v = teacher(x, t, first_frame, motion)
        x = x + float(ts[i + 1] - ts[i]) * v
        x[:, :, 0] = first_frame
        if (i + 1) % every == 0:
            states.append(x.clone())
    return torch.stack(states)


def trajectory_pool(
    teacher: HybridDiT,
    video: VideoSpec,
    n: int,
    teacher_steps: int,
    keep: int,
    seed: int,
    cache_dir: Path | None = None,
    batch: int = 32,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Teacher trajectories of `n` fresh training clips (even seeds from 2 * 10**6 on, so
    they are never the held-out ones and not the clips the teacher's own fixed sets use),
    recorded at `keep` + 1 points: {"first_frame", "motion", "states"}. Cached as one
    safetensors file under cache_dir, keyed by everything it depends on."""
    key = {
        "teacher": fingerprint(teacher),
        "video": video.to_dict(),
        "n": n,
        "teacher_steps": teacher_steps,
        "keep": keep,
        "seed": seed,
        "code": code_version(STUDENT_CODE),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = None if cache_dir is None else Path(cache_dir) / f"pool-{digest}.safetensors"
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        return load_file(str(path))
    start = 10**6 + seed * n  # far from the seeds a TaskSpec uses
    seeds = split_seeds(n, 0, start=start).train
    gen = torch.Generator().manual_seed(seed)
    ffs, motions, states = [], [], []
    teacher.eval()
    for i in tqdm(
        range(0, n, batch), desc="teacher trajectories", disable=not progress, leave=False
    ):
        chunk = seeds[i : i + batch]
        m = torch.tensor([clip_motion(s) for s in chunk], dtype=torch.float32)
        x0 = encode(
            make_batch(chunk, m.tolist(), video.frames, video.height, video.width), video.factor
        )
        noise = torch.randn(x0.shape, generator=gen)
        ffs.append(x0[:, :, 0])
        motions.append(m)
        states.append(teacher_trajectory(teacher, x0[:, :, 0], m, noise, teacher_steps, keep))
    pool = {
        "first_frame": torch.cat(ffs),
        "motion": torch.cat(motions),
        "states": torch.cat(states, dim=1).contiguous(),
    }
    if path is not None:
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file(pool, str(tmp), metadata={"key": json.dumps(key)})
    return pool


# -- training ---------------------------------------------------------------------------------


def secant_loss(student, states, first_frame, motion, i: int, k: int, keep: int):
    """Regression of the student's velocity at t_i onto the teacher's secant to t_{i+1};
    states: (keep + 1, B, ...) recorded at t = 1 - j / keep; frames 1.. only."""
    every = keep // k
    t0, t1 = 1.0 - i / k, 1.0 - (i + 1) / k
    x_in, x_out = states[i * every], states[(i + 1) * every]
    target = (x_out - x_in) / (t1 - t0)
    t = torch.full((x_in.shape[0],), t0)
    pred = student(x_in, t, first_frame, motion)
    return F.mse_loss(pred[:, :, 1:], target[:, :, 1:])


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(f".{out.stem}.checkpoint.pt")


def distill_student(
    teacher_path: str | Path,
    out: str | Path,
    spec: StudentSpec,
    cache_dir: str | Path | None = None,
    command: str = "",
    checkpoint_every: int = 100,
    progress: bool = True,
    n_heldout: int = 16,
) -> dict:
    """Makes the K-step student of the teacher at `teacher_path` (K = spec.steps) and writes
    it to `out` (.safetensors) with a JSON sidecar. Resumes from `out`'s checkpoint when
    one with the same key exists. Returns the sidecar's content."""
    out = Path(out)
    teacher, meta = load_model(teacher_path)
    if teacher.cfg.sample_steps is not None:
        raise ValueError(
            f"--teacher: {teacher_path} is a {teacher.cfg.sample_steps}-step student, not a "
            "teacher (a flow model sampled with any step count)"
        )
    task = meta.get("task")
    if not isinstance(task, dict) or "video" not in task:
        raise ValueError(f"--teacher: {teacher_path} records no task in its metadata")
    video = VideoSpec(**task["video"])
    if teacher.cfg.in_channels != video.latent_channels:
        raise ValueError(
            f"--teacher: {teacher_path} has {teacher.cfg.in_channels} input channels but its "
            f"task's latents have {video.latent_channels}: not a teacher of that task"
        )
    remove_stale_temps(out.parent)  # a killed run's half-written files
    keep = spec.keep
    torch.manual_seed(spec.seed)
    pool = trajectory_pool(
        teacher, video, spec.pool, spec.teacher_steps, keep, spec.seed, cache_dir,
        progress=progress,
    )  # fmt: skip
    student = HybridDiT(teacher.cfg.replace(sample_steps=spec.steps))
    student.load_state_dict(teacher.state_dict())
    opt = torch.optim.AdamW(student.parameters(), lr=spec.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(spec.seed)
    key = {
        "teacher": fingerprint(teacher),
        "spec": spec.to_dict(),
        "code": code_version(STUDENT_CODE),
    }
    start, losses = 0, []
    ckpt = _checkpoint_path(out)
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state.get("key") == key:
            student.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"])
            start, losses = state["step"], state["losses"]
    warmup = max(1, spec.train_steps // 20)
    student.train()
    n = pool["motion"].shape[0]
    bar = tqdm(
        range(start, spec.train_steps), desc=f"distill {spec.steps}-step student",
        disable=not progress, leave=False, initial=start, total=spec.train_steps,
    )  # fmt: skip
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, spec.train_steps, spec.lr, warmup)
        idx = torch.randint(0, n, (spec.batch,), generator=gen)
        i = int(torch.randint(0, spec.steps, (1,), generator=gen))
        loss = secant_loss(
            student, pool["states"][:, idx], pool["first_frame"][idx], pool["motion"][idx],
            i, spec.steps, keep,
        )  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.4f}")
        if (step + 1) % checkpoint_every == 0 and step + 1 < spec.train_steps:
            state = {
                "key": key,
                "model": student.state_dict(),
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "step": step + 1,
                "losses": losses,
            }
            with atomic_path(ckpt) as tmp:
                torch.save(state, tmp)
    student.eval()
    data = load_task(TaskSpec(video=video, n_train=1, n_heldout=n_heldout, sample_steps=spec.steps))
    quality = evaluate_student(student, teacher, data, spec.teacher_steps)
    sidecar = {
        "command": command,
        "teacher": _repo_relative(Path(teacher_path)),
        "student_steps": spec.steps,
        "task": task,
        "spec": spec.to_dict(),
        "code": key["code"],
        "torch": torch.__version__,
        "final_train_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "heldout": quality,
        "loss_curve_every_10": losses[::10],
    }
    save_model(student, out, {k: v for k, v in sidecar.items() if k != "loss_curve_every_10"})
    write_json(out.with_suffix(".json"), {"config": student.cfg.to_dict(), **sidecar})
    ckpt.unlink(missing_ok=True)
    return sidecar


@torch.no_grad()
def evaluate_student(student, teacher, data: TaskData, teacher_steps: int) -> dict:
    """Held-out quality of a K-step student: PSNR of its K-step samples vs the truth
    (frames 1..), its secant (distillation) loss against the teacher's trajectories from the
    same noise, and the teacher's own PSNR at K and at `teacher_steps` for scale."""
    k = student.cfg.sample_steps
    ff, m, noise = data.test_x[:, :, 0], data.test_motion, data.sample_noise
    states = teacher_trajectory(teacher, ff, m, noise, teacher_steps, k)
    losses = [secant_loss(student, states, ff, m, i, k, k).item() for i in range(k)]
    return {
        "steps": k,
        "psnr": sample_psnr(student, data, k),
        "secant_loss": sum(losses) / k,
        "teacher_psnr_same_steps": sample_psnr(teacher, data, k),
        "teacher_psnr_teacher_steps": sample_psnr(teacher, data, teacher_steps),
        "n_heldout": int(data.test_x.shape[0]),
    }


def _repo_relative(path: Path) -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)
