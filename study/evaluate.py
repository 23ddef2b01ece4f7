"""Held-out quality of a model on the embedded task: flow-matching loss at fixed timesteps
and noise, and the PSNR of sampled frames 1.. against the true continuation, in pixel space
after the codec's decode."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hybrid_dit import sample
from study.dataset import TaskData
from study.task import decode


def fm_loss(model, x0, motion, t, noise) -> torch.Tensor:
    """Flow-matching loss on frames 1.. (frame 0 is the given first frame)."""
    tt = t.view(-1, 1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    pred = model(x_t, t, x0[:, :, 0], motion)
    return F.mse_loss(pred[:, :, 1:], (noise - x0)[:, :, 1:])


def mse_to_psnr(mse: float, data_range: float = 2.0) -> float:
    """PSNR in dB of a mean squared error, for values in a range of width `data_range`
    ([-1, 1] -> 2); inf for 0."""
    return float("inf") if mse == 0 else 10 * math.log10(data_range**2 / mse)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB between two tensors of values in a range of
    width `data_range` ([-1, 1] -> 2)."""
    return mse_to_psnr(F.mse_loss(a.double(), b.double()).item(), data_range)


@torch.no_grad()
def evaluate(model, data: TaskData) -> dict:
    """Held-out flow-matching loss (fixed t and noise) and PSNR (dB) of sampled frames 1..
    against the true continuation."""
    model.eval()
    losses = []
    for t_val, noise in zip(data.spec.eval_ts, data.eval_noise, strict=True):
        t = torch.full((data.test_x.shape[0],), t_val)
        losses.append(fm_loss(model, data.test_x, data.test_motion, t, noise).item())
    return {
        "loss": sum(losses) / len(losses),
        "loss_per_t": losses,
        "psnr": sample_psnr(model, data, data.spec.sample_steps),
    }


def copy_baseline_psnr(data: TaskData) -> float:
    """PSNR of the trivial prediction "every frame equals the first" on the held-out clips:
    the floor a model must beat to have learnt any motion."""
    frames = data.test_frames
    return psnr(frames[:, :, :1].expand_as(frames[:, :, 1:]), frames[:, :, 1:])


def sample_psnr(model, data: TaskData, steps: int) -> float:
    """PSNR (dB) of `model`'s `steps`-step samples of the held-out clips (fixed noise) vs the
    truth, frames 1.., in pixel space."""
    video = sample(
        model, data.test_x[:, :, 0], data.test_motion, steps, data.grid, noise=data.sample_noise
    )
    frames = decode(video, data.spec.video.factor).clamp(-1, 1)
    return psnr(frames[:, :, 1:], data.test_frames[:, :, 1:])


@torch.no_grad()
def evaluate_sampler(model, data: TaskData, steps: int) -> dict:
    """Held-out quality of `model` sampled with `steps` steps (fixed noise): pixel MSE of
    frames 1.. against the truth (the quality measure the search adds up), per clip (for
    intervals) and as PSNR; plus the flow-matching loss for a flow model (None for a
    K-step student, for which it does not apply)."""
    model.eval()
    video = sample(
        model, data.test_x[:, :, 0], data.test_motion, steps, data.grid, noise=data.sample_noise
    )
    frames = decode(video, data.spec.video.factor).clamp(-1, 1)
    err = (frames[:, :, 1:].double() - data.test_frames[:, :, 1:].double()) ** 2
    clip_mse = err.flatten(1).mean(dim=1)
    mse = float(clip_mse.mean())
    loss = None
    if getattr(model.cfg, "sample_steps", None) is None:
        losses = []
        for t_val, noise in zip(data.spec.eval_ts, data.eval_noise, strict=True):
            t = torch.full((data.test_x.shape[0],), t_val)
            losses.append(fm_loss(model, data.test_x, data.test_motion, t, noise).item())
        loss = sum(losses) / len(losses)
    return {
        "steps": steps,
        "mse": mse,
        "psnr": mse_to_psnr(mse),
        "clip_mse": [float(x) for x in clip_mse],
        "loss": loss,
    }
