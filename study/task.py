"""The embedded image-to-video task: procedural clips generated in code from a seed, and a
fixed invertible codec (space-to-depth) from frames to latents.

What determines what:

* The seed fixes the scene (`scene(seed)`): a background that is a sum of a few coloured
  sinusoids with integer frequencies, so the texture is periodic with exactly one period
  per frame (a camera pan with wrap-around reveals nothing the first frame does not show);
  a tint; the camera direction; 1 to 3 objects (disc or square, size, start position,
  striped texture, colour, direction).
* The motion score m in [0, 1] fixes the speeds: the camera pans at m * CAMERA_SPEED and
  every object moves at m * OBJECT_SPEED pixels per frame, objects wrapping around the
  frame edges. m = 0 gives a static clip (every frame equals the first).
* Every direction is visible in the first frame, encoded as a chroma angle: the colour
  chroma(theta) = (cos theta, cos(theta - 2 pi/3), cos(theta + 2 pi/3)) has angle theta
  (see `direction_from_color`). The camera direction is the chroma angle of the background
  tint, which is exactly the mean colour of the background over a frame (the sinusoids
  have zero mean over a period; objects cover a small part); each object's direction is
  the chroma angle of its colour (its stripes vary the brightness only, which leaves the
  chroma unchanged).

So the true continuation is a function of the first frame and the motion score (up to
what objects hide of each other and of the background in the first frame).

Directions follow image coordinates: theta = 0 moves content right (+x), pi/2 down (+y).
Frames are rendered analytically at each pixel centre (sub-pixel motion without
interpolation) in float64 with numpy, then returned as float32 torch tensors in [-1, 1].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# With codec factor 4, motion 1 pans the camera one latent cell per frame.
CAMERA_SPEED = 4.0  # pixels per frame at motion 1
OBJECT_SPEED = 6.0  # pixels per frame at motion 1
N_WAVES = 4  # background sinusoids
MAX_OBJECTS = 3


# -- checks ---------------------------------------------------------------------------------


def _check_pos_int(name: str, val) -> None:
    if isinstance(val, bool) or not isinstance(val, numbers.Integral) or val < 1:
        raise ValueError(f"{name} must be a positive int, got {val!r}")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def _check_motion(motion) -> float:
    if isinstance(motion, bool) or not isinstance(motion, numbers.Real):
        raise TypeError(f"motion must be a real number in [0, 1], got {motion!r}")
    motion = float(motion)
    if not 0.0 <= motion <= 1.0:  # also refuses NaN
        raise ValueError(f"motion must be in [0, 1], got {motion}")
    return motion


def _batched(name: str, x) -> tuple[torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 4:
        return x.unsqueeze(0), True
    if x.dim() == 5:
        return x, False
    raise ValueError(f"{name} must be (B, C, T, H, W) or (C, T, H, W), got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class VideoSpec:
    """Clip size and codec factor. The latent is (3 factor^2, frames, height/factor,
    width/factor); with patch size 1 that is frames * (height/factor) * (width/factor)
    tokens."""

    frames: int = 4  # frames per clip, the first is the conditioning image
    height: int = 48  # pixels
    width: int = 48  # pixels
    factor: int = 4  # space-to-depth factor of the codec

    def __post_init__(self):
        for name in ("frames", "height", "width", "factor"):
            _check_pos_int(name, getattr(self, name))
        for name in ("height", "width"):
            if getattr(self, name) % self.factor:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be divisible by factor={self.factor}"
                )

    @property
    def latent_channels(self) -> int:
        return 3 * self.factor**2

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one latent clip."""
        f = self.factor
        return (self.latent_channels, self.frames, self.height // f, self.width // f)

    def tokens(self, patch_size: int = 1) -> int:
        _, t, h, w = self.latent_shape
        if h % patch_size or w % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide the latent size {h}x{w}")
        return t * (h // patch_size) * (w // patch_size)

    def to_dict(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "height": self.height,
            "width": self.width,
            "factor": self.factor,
        }


# The task the `small` preset is trained on: 32 x 32 RGB clips of 4 frames, latent
# (48, 4, 8, 8) = 256 tokens at patch 1 (README "Teachers" says why this size).
DEFAULT_VIDEO = VideoSpec(frames=4, height=32, width=32, factor=4)


# -- scenes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wave:
    """One background sinusoid: amp * color * sin(2 pi (fy y / H + fx x / W) + phase)."""

    amp: float
    fy: int  # cycles per frame height
    fx: int  # cycles per frame width
    phase: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class MovingObject:
    """A moving textured shape. Positions and sizes are fractions of the frame, so one seed
    gives the same scene at any resolution."""

    shape: str  # "disc" or "square"
    y: float  # centre in frame 0, fraction of the height
    x: float  # centre in frame 0, fraction of the width
    radius: float  # fraction of min(height, width); half the side for squares
    direction: float  # radians, image coordinates
    luma: float  # brightness offset
    stripe_freq: float  # stripe cycles per radius
    stripe_angle: float  # radians
    stripe_phase: float


@dataclass(frozen=True)
class Scene:
    """Everything the seed fixes. `render` adds the motion score and the frame size."""

    seed: int
    luma: float  # background brightness offset
    camera_direction: float  # radians; also the chroma angle of the tint
    waves: tuple[Wave, ...]
    objects: tuple[MovingObject, ...]


TINT_CHROMA = 0.25
OBJECT_CHROMA = 0.5
STRIPE_AMP = 0.2


def chroma(theta: float) -> np.ndarray:
    """The zero-mean RGB colour whose chroma angle is theta: (3,)."""
    return np.array(
        [math.cos(theta), math.cos(theta - 2 * math.pi / 3), math.cos(theta + 2 * math.pi / 3)]
    )


def direction_from_color(rgb) -> float:
    """Chroma angle in [0, 2 pi) of an RGB colour (any brightness offset is ignored): the
    inverse of `chroma`. rgb: (3,) array-like."""
    r, g, b = (float(c) for c in np.asarray(rgb, dtype=np.float64) - np.mean(rgb))
    return math.atan2((g - b) / math.sqrt(3), r) % (2 * math.pi)


def scene(seed: int) -> Scene:
    """The scene of clip `seed` (a non-negative int), drawn from numpy's PCG64 in a fixed
    order, so it is the same on every machine."""
    _check_seed(seed)
    rng = np.random.default_rng(seed)
    luma = float(rng.uniform(-0.2, 0.2))
    camera_direction = float(rng.uniform(0, 2 * math.pi))
    waves = []
    for _ in range(N_WAVES):
        fy, fx = 0, 0
        while fy == 0 and fx == 0:  # a constant wave would shift the mean colour
            fy, fx = (int(f) for f in rng.integers(-4, 5, size=2))
        color = 0.5 * rng.uniform(-1, 1) + 0.5 * chroma(rng.uniform(0, 2 * math.pi))
        waves.append(
            Wave(
                amp=float(rng.uniform(0.05, 0.12)),
                fy=fy,
                fx=fx,
                phase=float(rng.uniform(0, 2 * math.pi)),
                color=tuple(float(c) for c in color),
            )
        )
    objects = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        objects.append(
            MovingObject(
                shape=("disc", "square")[int(rng.integers(0, 2))],
                y=float(rng.uniform(0, 1)),
                x=float(rng.uniform(0, 1)),
                radius=float(rng.uniform(0.08, 0.16)),
                direction=float(rng.uniform(0, 2 * math.pi)),
                luma=float(rng.uniform(-0.3, 0.3)),
                stripe_freq=float(rng.uniform(0.5, 1.5)),
                stripe_angle=float(rng.uniform(0, math.pi)),
                stripe_phase=float(rng.uniform(0, 2 * math.pi)),
            )
        )
    return Scene(seed, luma, camera_direction, tuple(waves), tuple(objects))


def render(sc: Scene, motion: float, frames: int, height: int, width: int) -> np.ndarray:
    """Renders a scene: (3, T, H, W) float64 in [-1, 1]."""
    motion = _check_motion(motion)
    for name, val in (("frames", frames), ("height", height), ("width", width)):
        _check_pos_int(name, val)
    t = np.arange(frames, dtype=np.float64)[:, None, None]  # (T, 1, 1)
    y = np.arange(height, dtype=np.float64)[None, :, None]  # (1, H, 1)
    x = np.arange(width, dtype=np.float64)[None, None, :]  # (1, 1, W)

    # background, panned by the camera: content at frame t is frame 0 shifted by v t
    cam = motion * CAMERA_SPEED
    yb = y - cam * math.sin(sc.camera_direction) * t
    xb = x - cam * math.cos(sc.camera_direction) * t
    tint = sc.luma + TINT_CHROMA * chroma(sc.camera_direction)
    video = np.broadcast_to(tint[:, None, None, None], (3, frames, height, width)).copy()
    for w in sc.waves:
        s = np.sin(2 * math.pi * (w.fy * yb / height + w.fx * xb / width) + w.phase)  # (T, H, W)
        video += w.amp * np.asarray(w.color)[:, None, None, None] * s[None]

    # objects on top, in order, with a one-pixel anti-aliased edge
    size = min(height, width)
    speed = motion * OBJECT_SPEED
    for ob in sc.objects:
        cy = ob.y * height + speed * math.sin(ob.direction) * t  # (T, 1, 1)
        cx = ob.x * width + speed * math.cos(ob.direction) * t
        dy = (y - cy + height / 2) % height - height / 2  # nearest copy on the torus
        dx = (x - cx + width / 2) % width - width / 2
        r = ob.radius * size
        if ob.shape == "disc":
            dist = np.sqrt(dy * dy + dx * dx) - r
        else:
            dist = np.maximum(np.abs(dy), np.abs(dx)) - r
        alpha = np.clip(0.5 - dist, 0.0, 1.0)  # (T, H, W)
        u = (dx * math.cos(ob.stripe_angle) + dy * math.sin(ob.stripe_angle)) / r
        stripes = STRIPE_AMP * np.sin(2 * math.pi * ob.stripe_freq * u + ob.stripe_phase)
        color = (ob.luma + OBJECT_CHROMA * chroma(ob.direction))[:, None, None, None]
        video = video * (1 - alpha[None]) + (color + stripes[None]) * alpha[None]
    # the amplitudes keep values inside [-1, 1]; the clip only guards rounding
    return np.clip(video, -1.0, 1.0)


def make_clip(
    seed: int,
    motion: float,
    frames: int = DEFAULT_VIDEO.frames,
    height: int = DEFAULT_VIDEO.height,
    width: int = DEFAULT_VIDEO.width,
) -> torch.Tensor:
    """Clip `seed` at motion score `motion` in [0, 1]: (3, T, H, W) float32 in [-1, 1]."""
    video = render(scene(seed), motion, frames, height, width)
    return torch.from_numpy(video.astype(np.float32))


def make_batch(
    seeds: Sequence[int],
    motions: Sequence[float] | float,
    frames: int = DEFAULT_VIDEO.frames,
    height: int = DEFAULT_VIDEO.height,
    width: int = DEFAULT_VIDEO.width,
) -> torch.Tensor:
    """Clips for `seeds` at `motions` (one per seed, or one for all; sequences or tensors):
    (B, 3, T, H, W)."""
    seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one clip, got an empty sequence")
    if isinstance(motions, torch.Tensor):
        motions = motions.tolist()
    if isinstance(motions, numbers.Real):
        motions = [motions] * len(seeds)
    motions = list(motions)
    if len(motions) != len(seeds):
        raise ValueError(f"motions must have one value per seed ({len(seeds)}), got {len(motions)}")
    return torch.stack(
        [make_clip(s, m, frames, height, width) for s, m in zip(seeds, motions, strict=True)]
    )


def clip_motion(seed: int) -> float:
    """A motion score in [0, 1] that belongs to clip `seed` (its own random stream, so it
    does not change the scene); for sampling training and held-out pairs."""
    _check_seed(seed)
    return float(np.random.default_rng([seed, 1]).uniform(0.0, 1.0))


# -- codec ----------------------------------------------------------------------------------


def encode(video: torch.Tensor, factor: int = DEFAULT_VIDEO.factor) -> torch.Tensor:
    """Space-to-depth: (B, 3, T, H, W) or (3, T, H, W) -> (B, 3 f^2, T, H/f, W/f) (or
    without B). Channel c * f^2 + i * f + j holds pixel (i, j) of each f x f cell of colour c.
    Exactly inverted by `decode`."""
    _check_pos_int("factor", factor)
    x, squeeze = _batched("video", video)
    b, c, t, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"video height and width ({h}x{w}) must be divisible by factor={factor}")
    x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    x = F.pixel_unshuffle(x, factor)  # (B T, C f^2, H/f, W/f)
    x = x.reshape(b, t, c * factor**2, h // factor, w // factor).permute(0, 2, 1, 3, 4)
    return x[0] if squeeze else x


def decode(latent: torch.Tensor, factor: int = DEFAULT_VIDEO.factor) -> torch.Tensor:
    """Depth-to-space, the inverse of `encode`: (B, 3 f^2, T, h, w) -> (B, 3, T, h f, w f)
    (or without B)."""
    _check_pos_int("factor", factor)
    x, squeeze = _batched("latent", latent)
    b, c, t, h, w = x.shape
    if c % (factor**2):
        raise ValueError(f"latent channels ({c}) must be divisible by factor^2={factor**2}")
    x = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    x = F.pixel_shuffle(x, factor)  # (B T, C / f^2, h f, w f)
    x = x.reshape(b, t, c // factor**2, h * factor, w * factor).permute(0, 2, 1, 3, 4)
    return x[0] if squeeze else x


# -- train / held-out split -----------------------------------------------------------------


@dataclass(frozen=True)
class SeedSplit:
    """Training and held-out clip seeds; disjoint by construction (even vs odd seeds)."""

    train: tuple[int, ...]
    heldout: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {"train": list(self.train), "heldout": list(self.heldout)}

    @classmethod
    def from_dict(cls, d) -> SeedSplit:
        return cls(tuple(d["train"]), tuple(d["heldout"]))


def is_heldout(seed: int) -> bool:
    """Odd seeds are held out; even seeds are for training."""
    _check_seed(seed)
    return seed % 2 == 1


def split_seeds(n_train: int, n_heldout: int, start: int = 0) -> SeedSplit:
    """The first `n_train` even seeds and the first `n_heldout` odd seeds from 2 * start."""
    for name, val in (("n_train", n_train), ("n_heldout", n_heldout)):
        if isinstance(val, bool) or not isinstance(val, numbers.Integral) or val < 0:
            raise ValueError(f"{name} must be a non-negative int, got {val!r}")
    _check_seed(start)
    return SeedSplit(
        tuple(2 * (start + i) for i in range(n_train)),
        tuple(2 * (start + i) + 1 for i in range(n_heldout)),
    )
