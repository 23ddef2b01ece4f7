"""Per-machine measurement cache.

Every measurement of the study is stored as one small JSON file under
`<root>/<machine id>/<stage>/<key hash>.json`, written atomically when the measurement
finishes. A re-run on the same machine reuses what is there (unless fresh), so a killed run
resumes from the last finished measurement, and the report can say which numbers came from
the cache. The key is everything the measurement depends on (shapes, variant, seeds,
versions): change any of it and the entry is measured anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

from export.files import remove_stale_temps, write_json


def machine_id() -> str:
    """A short stable id for this machine and software stack (CPU model, cores, torch,
    CUDA device): measurements from elsewhere are never reused."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [cpu, str(os.cpu_count()), torch.__version__, str(torch.get_num_threads())]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


ROOT = Path(__file__).resolve().parents[1]


def code_version(paths: tuple[str, ...]) -> str:
    """A hash of the source of `paths` (packages or files, relative to the repository):
    part of a measurement's cache key, so a number computed by other code is never reused.
    Packages count every .py and .c file below them (kernels/ holds C source that is
    compiled at first use)."""
    return _code_version(tuple(paths))


def _source_files(paths: tuple[str, ...]) -> list[Path]:
    files = []
    for rel in paths:
        p = ROOT / rel
        if p.is_dir():
            files += sorted(f for ext in ("*.py", "*.c") for f in p.rglob(ext))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"code_version: no such package or file {rel!r}")
    return files


_CODE_CACHE: dict[tuple[str, ...], str] = {}


def _code_version(paths: tuple[str, ...]) -> str:
    if paths not in _CODE_CACHE:  # once per process: the code does not change under it
        h = hashlib.sha256()
        for f in _source_files(paths):
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
        _CODE_CACHE[paths] = h.hexdigest()[:16]
    return _CODE_CACHE[paths]


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Cache:
    """cache.get_or_compute(stage, key, fn) -> (value, from_cache)."""

    def __init__(self, root: str | Path, fresh: bool = False, enabled: bool = True):
        self.root = Path(root) / machine_id()
        self.fresh = fresh
        self.enabled = enabled
        self.hits: list[str] = []
        self.misses: list[str] = []
        # a killed run's half-written entries never got their final names: drop them
        self.removed_temps = remove_stale_temps(self.root) if enabled else []

    def path(self, stage: str, key: dict) -> Path:
        return self.root / stage / f"{key_hash(key)}.json"

    def get_or_compute(self, stage: str, key: dict, fn: Callable[[], dict]) -> tuple[dict, bool]:
        path = self.path(stage, key)
        if self.enabled and not self.fresh and path.exists():
            try:
                entry = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                entry = None  # unreadable entry: measure again and overwrite it
            if entry is not None and entry.get("key") == json.loads(json.dumps(key, default=str)):
                self.hits.append(stage)
                return entry["value"], True
        value = fn()
        if self.enabled:
            write_json(path, {"stage": stage, "key": key, "value": value})
        self.misses.append(stage)
        return value, False
