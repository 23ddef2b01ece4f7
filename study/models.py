"""Model files: a HybridDiT's weights as safetensors with its config and metadata in the
header, written atomically; the committed teacher's path; a fingerprint of the weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from export.files import atomic_path
from hybrid_dit import DiTConfig, HybridDiT

ASSETS = Path(__file__).parent / "assets"


def teacher_path(seed: int) -> Path:
    """The committed teacher of `seed` (made by the command in its .json sidecar)."""
    return ASSETS / f"teacher_s{seed}.safetensors"


def student_path(teacher: str | Path, steps: int) -> Path:
    """Where `mobileattn distill --teacher T --steps K` puts T's K-step student."""
    teacher = Path(teacher)
    return teacher.with_name(f"{teacher.stem}-student{steps}.safetensors")


TEACHER_PATH = teacher_path(0)


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


def fingerprint(model: HybridDiT) -> str:
    """A short hash of the model: its config (everything that changes what the same weights
    compute: options, scales, sample_steps, ...) and its weights (names and bytes)."""
    h = hashlib.sha256()
    h.update(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
