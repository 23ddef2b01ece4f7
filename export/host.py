"""The host side of the exported Core ML step: numpy only (no torch), so it ships to a Mac
or a phone's companion code beside the .mlpackage and its bundle.json.

    from export.host import load_spec, mil_predictor, sample
    spec = load_spec("bundle/")                        # bundle.json: shapes, layouts, grid
    predict = mil_predictor("bundle/model.mlpackage")  # Linux: the numpy MIL interpreter
    # macOS: predict = coremltools.models.MLModel("bundle/model.mlpackage").predict
    video = sample(predict, spec, first_frame, motion, steps=2, seed=0)  # (B, C, T, H, W)

The program is one denoising step on rank-4 channels-first tensors with no sin/cos inside
(hybrid_dit/ane.py, ANEStep). This module does everything around it, as
`hybrid_dit.sample` does around the PyTorch model:
  - layout in and out: the latent video (B, C, T, H*p, W*p) <-> tokens (B, C*p*p, 1, N),
    space-to-depth within each frame, channel c*p*p + py*p + px, token t*H*W + y*W + x;
  - first-frame conditioning: the clean first frame replaces latent frame 0, whose
    timestep is 0;
  - the sinusoid features of each frame's timestep and of the motion score, in float64
    (in an fp16 program their arguments, ~1000 rad, would be rounded to 0.5 rad);
  - noise, the Euler steps on the uniform grid t = 1 .. 0, re-injecting frame 0 after each.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BUNDLE_JSON = "bundle.json"
FORMAT = "mobileattn.bundle/1"
X, T_FREQ, MOTION_FREQ, V = "x", "t_freq", "motion_freq", "v"  # the program's tensor names
DTYPES = ("float16", "float32")
TOKENS_LAYOUT = (
    "channels-first tokens (B, C*p*p, 1, N): channel c*p*p + py*p + px holds latent channel "
    "c at patch offset (py, px); token t*H*W + y*W + x the patch at (t, y, x) of the token "
    "grid (T, H, W), the sequence last"
)


def sinusoid(x, dim: int, max_period: float = 10000.0) -> np.ndarray:
    """Sinusoidal embedding of scalars, in float64: x (...) -> (..., dim) as [cos | sin]
    (DiT's order; hybrid_dit.model.sinusoid in numpy)."""
    half = dim // 2
    freqs = np.exp(np.arange(half, dtype=np.float64) * (-math.log(max_period) / half))
    args = np.asarray(x, dtype=np.float64)[..., None] * freqs
    return np.concatenate([np.cos(args), np.sin(args)], axis=-1)


def tokens_from_video(video: np.ndarray, patch: int) -> np.ndarray:
    """(B, C, T, H*p, W*p) -> (B, C*p*p, 1, T*H*W): the program's token layout."""
    b, c, t, h, w = video.shape
    p = patch
    y = video.reshape(b, c, t, h // p, p, w // p, p).transpose(0, 1, 4, 6, 2, 3, 5)
    return np.ascontiguousarray(y.reshape(b, c * p * p, 1, t * (h // p) * (w // p)))


def video_from_tokens(tokens: np.ndarray, grid, patch: int) -> np.ndarray:
    """(B, C*p*p, 1, N) -> (B, C, T, H*p, W*p): the inverse of tokens_from_video."""
    t, h, w = grid
    p = patch
    b = tokens.shape[0]
    y = tokens.reshape(b, -1, p, p, t, h, w).transpose(0, 1, 4, 5, 2, 6, 3)
    return np.ascontiguousarray(y.reshape(b, -1, t, h * p, w * p))


def _pos_int(name: str, val, minimum: int = 1) -> int:
    if isinstance(val, bool) or not isinstance(val, numbers.Integral) or val < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {val!r}")
    return int(val)


def _pos_real(name: str, val) -> float:
    if isinstance(val, bool) or not isinstance(val, numbers.Real) or not 0 < val < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {val!r}")
    return float(val)


@dataclass(frozen=True)
class StepSpec:
    """What the host needs to know about one exported step program: the model's sizes, the
    token grid, the program's batch and I/O dtype, and the sampling-step rule.
    Validated on construction (an error names the field)."""

    in_channels: int  # latent channels C
    patch_size: int  # spatial patch p
    grid: tuple[int, int, int]  # token grid (T, H, W)
    freq_dim: int  # sinusoid width F
    time_scale: float  # t in [0, 1] is embedded as sinusoid(t * time_scale)
    motion_scale: float  # the motion score is embedded as sinusoid(m * motion_scale)
    max_period: float = 10000.0  # the sinusoid's longest period
    batch: int = 1  # the program's static batch
    dtype: str = "float16"  # the program's input and output dtype
    sample_steps: int | None = None  # K for a K-step student (sampled with exactly K steps)
    steps: int | None = None  # the steps the bundle was exported for (None: any)

    def __post_init__(self):
        set_ = object.__setattr__
        for name in ("in_channels", "patch_size", "batch"):
            set_(self, name, _pos_int(f"spec.{name}", getattr(self, name)))
        set_(self, "freq_dim", _pos_int("spec.freq_dim", self.freq_dim, minimum=2))
        if self.freq_dim % 2:
            raise ValueError(f"spec.freq_dim must be even (cos and sin), got {self.freq_dim}")
        for name in ("time_scale", "motion_scale", "max_period"):
            set_(self, name, _pos_real(f"spec.{name}", getattr(self, name)))
        grid = self.grid
        if not isinstance(grid, (tuple, list)) or len(grid) != 3:
            raise ValueError(f"spec.grid must be a token grid (T, H, W), got {grid!r}")
        set_(self, "grid", tuple(_pos_int("spec.grid", g) for g in grid))
        if self.dtype not in DTYPES:
            raise ValueError(f"spec.dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("sample_steps", "steps"):
            if getattr(self, name) is not None:
                set_(self, name, _pos_int(f"spec.{name}", getattr(self, name)))

    # -- derived ---------------------------------------------------------------------------
    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def video_shape(self) -> tuple[int, int, int, int, int]:
        """(B, C, T, H*p, W*p): the latent video the host works on."""
        t, h, w = self.grid
        p = self.patch_size
        return (self.batch, self.in_channels, t, h * p, w * p)

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """(B, C, H*p, W*p): the clean first latent frame."""
        b, c, _, h, w = self.video_shape
        return (b, c, h, w)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The program's tensors: {name: shape}, inputs then the output."""
        b, f = self.batch, self.freq_dim
        cpp = self.in_channels * self.patch_size**2
        return {
            X: (b, cpp, 1, self.tokens),
            T_FREQ: (b, f, 1, self.grid[0]),
            MOTION_FREQ: (b, f, 1, 1),
            V: (b, cpp, 1, self.tokens),
        }

    def inputs(self) -> list[dict]:
        """The program's inputs for bundle.json: name, shape, dtype, layout and how the host
        makes each from the latent video, timestep and motion score."""
        s = self.shapes()
        return [
            {
                "name": X,
                "shape": list(s[X]),
                "dtype": self.dtype,
                "layout": TOKENS_LAYOUT,
                "host": "x_t (B, C, T, H*p, W*p) with latent frame 0 replaced by the clean "
                "first frame, then tokens_from_video(x_t, p)",
            },
            {
                "name": T_FREQ,
                "shape": list(s[T_FREQ]),
                "dtype": self.dtype,
                "layout": "(B, F, 1, T): [cos | sin] features (F/2 each) of each latent "
                "frame's timestep",
                "host": "sinusoid(t_frames * time_scale, F) moved to (B, F, 1, T) in "
                "float64, t_frames = [0, t, ..., t] (frame 0 is clean)",
            },
            {
                "name": MOTION_FREQ,
                "shape": list(s[MOTION_FREQ]),
                "dtype": self.dtype,
                "layout": "(B, F, 1, 1): [cos | sin] features of the motion score",
                "host": "sinusoid(motion * motion_scale, F) moved to (B, F, 1, 1), float64",
            },
        ]

    def outputs(self) -> list[dict]:
        return [
            {
                "name": V,
                "shape": list(self.shapes()[V]),
                "dtype": self.dtype,
                "layout": TOKENS_LAYOUT,
                "host": "video_from_tokens(v, grid, p): the velocity (noise - clean) of x_t, "
                "(B, C, T, H*p, W*p); Euler step x += (t_next - t) * velocity",
            }
        ]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> StepSpec:
        if not isinstance(d, Mapping):
            raise TypeError(f"spec must be a dict, got {type(d).__name__}")
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"spec has unknown field(s): {', '.join(unknown)}")
        try:
            return cls(**d)
        except TypeError as e:  # a missing field
            raise ValueError(f"spec: {e}") from None


def load_spec(source) -> StepSpec:
    """The StepSpec of a bundle: a bundle folder, its bundle.json, or the dict it holds (what
    export.bundle.write_bundle returns)."""
    if isinstance(source, StepSpec):
        return source
    if isinstance(source, Mapping):
        bundle = source
        where = "bundle dict"
    else:
        path = Path(source)
        if path.is_dir():
            path = path / BUNDLE_JSON
        if not path.is_file():
            raise FileNotFoundError(f"no bundle description at {str(path)!r}")
        bundle = json.loads(path.read_text())
        where = str(path)
    if not isinstance(bundle, Mapping) or "host" not in bundle:
        raise ValueError(f"{where} is not a bundle description: it has no 'host' entry")
    return StepSpec.from_dict(bundle["host"])


# -- checks ---------------------------------------------------------------------------------


def _layout_hint(name: str, got: tuple[int, ...], want: tuple[int, ...], spec: StepSpec) -> str:
    """Names the common wrong layouts of an input."""
    if name == X and got == spec.video_shape:
        return "; that is the latent video (B, C, T, H, W): convert it with tokens_from_video"
    if len(got) == len(want) and sorted(got) == sorted(want) and got != want:
        return "; the same sizes in another axis order: the layout is channels-first, (B, C, 1, S)"
    if name in (T_FREQ, MOTION_FREQ) and len(got) <= 2 and math.prod(got) <= spec.batch * 64:
        return "; timesteps or scores? pass their sinusoid features (step_inputs makes them)"
    return ""


def _check_array(kind: str, name: str, arr, want: tuple[int, ...], dtype: str, spec: StepSpec):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{kind} {name!r} must be a numpy array, got {type(arr).__name__}")
    got = tuple(arr.shape)
    if got != want:
        raise ValueError(
            f"{kind} {name!r} must have shape {want} ({_describe(name)}), got "
            f"{got}{_layout_hint(name, got, want, spec)}"
        )
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise TypeError(
            f"{kind} {name!r} must have dtype {dtype} (the program's), got {arr.dtype}; "
            f"step_inputs converts on the host"
        )
    if arr.dtype.kind != "f":
        raise TypeError(f"{kind} {name!r} must be floating, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{kind} {name!r} has non-finite values")


def _describe(name: str) -> str:
    return {
        X: "tokens (B, C*p*p, 1, N)",
        T_FREQ: "timestep features (B, F, 1, T)",
        MOTION_FREQ: "motion features (B, F, 1, 1)",
        V: "velocity tokens (B, C*p*p, 1, N)",
    }[name]


def check_feeds(spec: StepSpec, feeds: Mapping) -> None:
    """Checks a feed dict against the program: the names, and each input's shape (so its
    layout), dtype and finiteness; the error names the input."""
    if not isinstance(feeds, Mapping):
        raise TypeError(f"feeds must be a dict {{input name: array}}, got {type(feeds).__name__}")
    names = (X, T_FREQ, MOTION_FREQ)
    missing = [n for n in names if n not in feeds]
    extra = [n for n in feeds if n not in names]
    if missing or extra:
        parts = [f"missing {missing}"] * bool(missing) + [f"unknown {extra}"] * bool(extra)
        raise ValueError(f"feeds: {'; '.join(parts)}; the program takes {list(names)}")
    shapes = spec.shapes()
    for n in names:
        _check_array("input", n, feeds[n], shapes[n], spec.dtype, spec)


def check_outputs(spec: StepSpec, outputs) -> np.ndarray:
    """The velocity tokens from a predictor's output dict, checked; as float32."""
    if not isinstance(outputs, Mapping) or V not in outputs:
        got = list(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise ValueError(f"the program's outputs must hold {V!r}, got {got}")
    v = np.asarray(outputs[V])
    _check_array("output", V, v, spec.shapes()[V], None, spec)
    return v.astype(np.float32)


def _per_batch(name: str, val, batch: int) -> np.ndarray:
    arr = np.asarray(val, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full((batch,), float(arr))
    if arr.shape != (batch,) or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a finite number or have shape ({batch},), got {val!r}")
    return arr


def _check_video(name: str, arr, shape) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
        got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise TypeError(f"{name} must be a floating numpy array, got {got}")
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(arr.shape)}")
    return arr


# -- one step and the sampler ---------------------------------------------------------------


def step_inputs(spec: StepSpec, x_t, t, first_frame, motion) -> dict[str, np.ndarray]:
    """The program's feeds for one step from the latent video x_t (B, C, T, H*p, W*p), the
    timestep t (a number or (B,)), the clean first frame (B, C, H*p, W*p) and the motion
    score (a number or (B,)), in the program's dtype."""
    x_t = _check_video("x_t", x_t, spec.video_shape)
    first_frame = _check_video("first_frame", first_frame, spec.frame_shape)
    b, nt = spec.batch, spec.grid[0]
    t = _per_batch("t", t, b)
    motion = _per_batch("motion", motion, b)
    x = x_t.astype(np.float32, copy=True)
    x[:, :, 0] = first_frame  # frame 0 is the clean first frame ...
    t_frames = np.repeat(t[:, None], nt, axis=1)
    t_frames[:, 0] = 0.0  # ... at timestep 0
    t_freq = sinusoid(t_frames * spec.time_scale, spec.freq_dim, spec.max_period)  # (B, T, F)
    m_freq = sinusoid(motion * spec.motion_scale, spec.freq_dim, spec.max_period)  # (B, F)
    return {
        X: tokens_from_video(x, spec.patch_size).astype(spec.dtype),
        T_FREQ: np.ascontiguousarray(t_freq.transpose(0, 2, 1)[:, :, None]).astype(spec.dtype),
        MOTION_FREQ: m_freq[:, :, None, None].astype(spec.dtype),
    }


def velocity(predict: Callable, spec: StepSpec, x_t, t, first_frame, motion) -> np.ndarray:
    """One step through the program: the velocity (B, C, T, H*p, W*p), float32.
    predict(feeds) -> {output name: array}: an MLModel's predict, or mil_predictor(...)."""
    feeds = step_inputs(spec, x_t, t, first_frame, motion)
    check_feeds(spec, feeds)
    v = check_outputs(spec, predict(feeds))
    return video_from_tokens(v, spec.grid, spec.patch_size)


def resolve_steps(spec: StepSpec, steps) -> int:
    """The Euler step count: `steps`, or the bundle's; a K-step student takes exactly K."""
    if steps is None:
        steps = spec.steps if spec.steps is not None else spec.sample_steps
        if steps is None:
            raise ValueError("steps: this bundle fixes no step count; give steps (an int >= 1)")
    steps = _pos_int("steps", steps)
    k = spec.sample_steps
    if k is not None and steps != k:
        raise ValueError(
            f"steps: this model is a {k}-step student (sample_steps={k}): it was trained for "
            f"the uniform {k}-step grid and must be sampled with steps={k}, got {steps}"
        )
    return steps


def sample(
    predict: Callable,
    spec,
    first_frame,
    motion,
    steps: int | None = None,
    noise: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Samples a latent video through the exported step, as hybrid_dit.sample does with
    the PyTorch model: x = noise with frame 0 := first_frame, then on the uniform grid
    t = 1, 1 - 1/steps, ..., 0 one Euler step x += (t_next - t) v per program call, frame 0
    re-injected after each.

    Args:
        predict: feeds -> {output name: array} (MLModel.predict on macOS; mil_predictor).
        spec: a StepSpec, a bundle folder, its bundle.json or the bundle dict.
        first_frame: (B, C, H*p, W*p) clean first latent frame (numpy, floating).
        motion: the motion score, a number or (B,).
        steps: Euler steps (None: the bundle's; a K-step student needs exactly K).
        noise: (B, C, T, H*p, W*p) initial noise; drawn with numpy's default_rng(seed)
            when None.
    Returns:
        (B, C, T, H*p, W*p) float32 latent video; frame 0 equals first_frame.
    """
    spec = load_spec(spec)
    steps = resolve_steps(spec, steps)
    first_frame = _check_video("first_frame", first_frame, spec.frame_shape)
    if noise is None:
        noise = np.random.default_rng(seed).standard_normal(spec.video_shape, dtype=np.float32)
    noise = _check_video("noise", noise, spec.video_shape)
    x = noise.astype(np.float32, copy=True)
    x[:, :, 0] = first_frame
    ts = np.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        v = velocity(predict, spec, x, ts[i], first_frame, motion)
        x = x + np.float32(ts[i + 1] - ts[i]) * v
        x[:, :, 0] = first_frame  # re-inject: frame 0 is known, whatever the program says
    return x


def mil_predictor(path, precision: str = "fp16") -> Callable[[Mapping], dict]:
    """predict(feeds) through export.run_mil, the numpy MIL interpreter (Linux, or any
    machine without Core ML); MLModel(path).predict is the macOS equivalent."""
    from export.mil import run_mil

    def predict(feeds: Mapping) -> dict:
        return run_mil(path, feeds, precision=precision)

    return predict
