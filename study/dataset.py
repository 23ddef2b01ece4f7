"""The study's data: the clips it trains and measures on (rendered by study.task), split into
training and held-out seeds that never meet, as latents, with the fixed noise of the
held-out measurements."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from tqdm import tqdm

from study.task import DEFAULT_VIDEO, VideoSpec, clip_motion, encode, make_batch, split_seeds


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

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        """The inverse of to_dict (a model's sidecar records its task this way)."""
        return cls(**{**d, "video": VideoSpec(**d["video"]), "eval_ts": tuple(d["eval_ts"])})


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
