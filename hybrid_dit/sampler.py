"""Flow-matching Euler sampler for image-to-video: from noise at t = 1 to the clean latent
video at t = 0, with the clean first frame re-injected at every step."""

from __future__ import annotations

import numbers

import torch

from attention_zoo.checks import FLOAT_DTYPES
from hybrid_dit.config import check_grid


@torch.no_grad()
def sample(
    model,
    first_frame: torch.Tensor,
    motion,
    steps: int,
    grid,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Samples a latent video conditioned on its first frame.

    x_t = (1 - t) x_0 + t noise and the model predicts v = noise - x_0, so one Euler step
    from t to s is x_s = x_t + (s - t) v, on the uniform grid t = 1, 1 - 1/steps, ..., 0.

    Args:
        model: a HybridDiT (or its ANE twin): model(x_t, t, first_frame, motion) -> velocity.
            A K-step student (cfg.sample_steps = K) is sampled exactly like a teacher, with
            steps = K: each of its evaluations is one Euler step of the uniform grid.
        first_frame: (B, C, H, W) clean first latent frame; H, W = grid's H, W times the
            patch size.
        motion: motion score, a float or a (B,) tensor.
        steps: number of Euler steps (model evaluations), >= 1 (a student's own K).
        grid: token grid (T, H, W); T latent frames are produced, frame 0 = first_frame.
        generator: seeds the initial noise (drawn on the generator's device).
        noise: (B, C, T, H, W) initial noise instead of drawing it.
    Returns:
        (B, C, T, H, W) latent video in first_frame's dtype; frame 0 equals first_frame.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not callable(model):
        raise TypeError(f"model must be a HybridDiT or its twin, got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    student = getattr(cfg, "sample_steps", None)
    if student is not None and steps != student:
        raise ValueError(
            f"steps: this model is a {student}-step student (cfg.sample_steps={student}): it "
            f"was trained for the uniform {student}-step grid and must be sampled with "
            f"steps={student}, got {steps}"
        )
    t_len, hp, wp = check_grid(grid)
    if not isinstance(first_frame, torch.Tensor):
        raise TypeError(f"first_frame must be a torch.Tensor, got {type(first_frame).__name__}")
    p = cfg.patch_size
    b = first_frame.shape[0] if first_frame.dim() == 4 else None
    expect = (b, cfg.in_channels, hp * p, wp * p)
    if first_frame.dim() != 4 or tuple(first_frame.shape) != expect:
        raise ValueError(
            f"first_frame must have shape (B, C, H, W) = (B, {cfg.in_channels}, {hp * p}, "
            f"{wp * p}) for grid {grid} and patch size {p}, got {tuple(first_frame.shape)}"
        )
    if first_frame.dtype not in FLOAT_DTYPES:
        raise TypeError(f"first_frame must have a floating dtype, got {first_frame.dtype}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    shape = (b, cfg.in_channels, t_len, hp * p, wp * p)
    if noise is None:
        gen_device = generator.device if generator is not None else first_frame.device
        noise = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
    elif not isinstance(noise, torch.Tensor) or tuple(noise.shape) != shape:
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of shape {shape}, got {got}")
    x = noise.to(device=first_frame.device, dtype=first_frame.dtype).clone()
    x[:, :, 0] = first_frame
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    for i in range(steps):
        t = torch.full((b,), float(ts[i]), device=x.device, dtype=torch.float32)
        v = model(x, t, first_frame, motion)
        x = x + float(ts[i + 1] - ts[i]) * v.to(x.dtype)
        x[:, :, 0] = first_frame  # re-inject: frame 0 is known, whatever the model says
    return x
