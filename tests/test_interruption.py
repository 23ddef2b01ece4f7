"""A study that survives being killed: `mobileattn run` on a micro configuration is killed
with SIGKILL twice (during the quality stage, then during export), run again to the end,
and compared with an uninterrupted run.

Checked: (a) the resumed runs reuse every measurement finished before a kill (their tables
mark it `cached`); (b) no JSON, safetensors, ONNX or Core ML file under the output and cache
folders is half-written, and no temporary file is left (a later run removes a killed one's
temporaries, `export.files.remove_stale_temps`); (c) the final tables and report equal an
uninterrupted run's: every quality number (seeded) identical, the report identical once
the numbers measured live (load average, GEMM rate, bandwidth, onnxruntime time, stage
times), the date, the paths and the cache marks are masked.

Latency is a timing of a shared machine, and the search's choice depends on it, so the
uninterrupted run's fresh cache is seeded with the interrupted run's latency entries only
(stages zoo, blocks, models, host): both searches see the same latencies, and
every quality measurement (teacher, swaps, configs built for real, export) is computed anew.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from export.files import atomic_path, remove_stale_temps, temp_prefix
from hybrid_dit import PRESETS
from study.dataset import TaskSpec
from study.task import VideoSpec
from study.training import train_teacher

ROOT = Path(__file__).resolve().parents[1]
LATENCY_STAGES = ("zoo", "blocks", "models", "host")
MICRO_VIDEO = VideoSpec(frames=2, height=12, width=16, factor=4)
# tests/test_study.py's micro configuration, as a JSON config file would hold it
MICRO_CONFIG = {
    "latency_preset": "tiny",
    "latency_grid": [2, 3, 4],
    "backends": ["torch-cpu", "onnxruntime-cpu"],
    "variants": ["softmax", "relu_linear", "softmax_frame"],
    "zoo_grids": [[2, 2, 3], [2, 3, 4]],
    "zoo_variants": ["softmax", "relu_linear"],
    "zoo_repeats": 1,
    "block_repeats": 1,
    "model_repeats": 1,
    "n_heldout": 2,
    "eval_ts": [0.5],
    "steps": [1, 2],
    "act_batches": 1,
    "distill_steps": 2,
    "joint_steps": 1,
    "top_k": 2,
    "notes": ["micro test configuration"],
}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The config file and a two-block teacher trained a few steps (as tests/test_study.py)."""
    root = tmp_path_factory.mktemp("interrupt")
    teacher = root / "teacher.safetensors"
    cfg = PRESETS["small"].replace(hidden=32, depth=2, heads=2, head_dim=16, attention="softmax")
    spec = TaskSpec(video=MICRO_VIDEO, n_train=16, n_heldout=2, eval_ts=(0.5,), sample_steps=1)
    train_teacher(teacher, steps=3, batch=2, spec=spec, cfg=cfg, progress=False, command="test")
    config = root / "micro.json"
    config.write_text(json.dumps(MICRO_CONFIG))
    return root, config, teacher


def start(config: Path, teacher: Path, out: Path, cache: Path) -> subprocess.Popen:
    args = ["run", "--config", str(config), "--teacher", str(teacher)]
    args += ["--out", str(out), "--cache", str(cache), "--no-progress"]
    return subprocess.Popen(
        [sys.executable, "-m", "mobileattn.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILLs `proc` as soon as ready() holds; fails if it ends or times out first."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(
                f"the run ended (rc {proc.returncode}) before the kill point:\n{err[-3000:]}"
            )
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("the kill point never came")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out


def entries(cache: Path, stage: str | None = None) -> list[Path]:
    """Finished cache entries (final names, not temporaries), of one stage or all."""
    pattern = f"*/{stage}/*.json" if stage else "*/*/*.json"
    return sorted(p for p in cache.glob(pattern) if not p.name.startswith("."))


def is_temp(path: Path) -> bool:
    return path.name.startswith(".") and (path.name.endswith(".tmp") or ".old" in path.name)


def check_files_whole(*folders: Path) -> dict[str, int]:
    """Every JSON parses, every safetensors / ONNX / Core ML file loads; no temporaries.
    Returns how many of each kind were checked."""
    import onnx
    from safetensors.torch import load_file

    from export.mil import load_program

    seen = {"json": 0, "safetensors": 0, "onnx": 0, "mlpackage": 0}
    for folder in folders:
        for path in folder.rglob("*"):
            assert not is_temp(path), f"temporary left behind: {path}"
            if ".mlpackage" in path.parent.as_posix():
                continue  # inside a package: checked as a whole below
            if path.suffix == ".json":
                json.loads(path.read_text())
                seen["json"] += 1
            elif path.suffix == ".safetensors":
                load_file(str(path))
                seen["safetensors"] += 1
            elif path.suffix == ".onnx":
                onnx.load(str(path))
                seen["onnx"] += 1
            elif path.suffix == ".mlpackage":
                assert (path / "Manifest.json").is_file(), path
                json.loads((path / "Manifest.json").read_text())
                assert load_program(path).operations, path
                seen["mlpackage"] += 1
    return seen


def normalise(report: str, *outs: Path) -> str:
    """The report with what may differ between two runs of the same study masked: the date
    and paths, the numbers measured live (load average, GEMM rate and copy bandwidth, the
    zoo's fraction of that GEMM rate, onnxruntime's time, the stage times), the `*` marks
    of cached numbers and the column alignment that follows from them (marked cells are not
    numbers)."""
    for out in outs:
        report = report.replace(str(out), "<out>")
    report = re.sub(r"^Generated .*$", "Generated <date>", report, flags=re.M)
    report = re.sub(r"load average at the start: ([0-9.]+|n/a)", "load average <live>", report)
    report = re.sub(r"^- Roofline scales, .*$", "- Roofline scales <cached>", report, flags=re.M)
    report = re.sub(r"^- Measurements: .*$", "- Measurements <counts>", report, flags=re.M)
    report = re.sub(r"onnxruntime [0-9.]+ ms", "onnxruntime <ms> ms", report)
    zoo_start, zoo_end = report.index("## 1."), report.index("## 2.")
    zoo = re.sub(
        r"\| [0-9.]+x \|$", "| <x live GEMM floor> |", report[zoo_start:zoo_end], flags=re.M
    )
    report = report[:zoo_start] + zoo + report[zoo_end:]
    head, _, times = report.partition("## Stage times")
    report = head + "## Stage times" + re.sub(r"\| [0-9]+ \|", "| <s> |", times)
    report = re.sub(r"^[|:-]+$", lambda m: m.group(0).replace(":", ""), report, flags=re.M)
    return re.sub(r"(?<=[0-9])\*", "", report)  # cache marks follow a number


def without(d, keys):
    """d with `keys` removed at every depth (lists and dicts)."""
    if isinstance(d, dict):
        return {k: without(v, keys) for k, v in d.items() if k not in keys}
    if isinstance(d, list):
        return [without(v, keys) for v in d]
    return d


def test_killed_run_resumes_and_matches_an_uninterrupted_one(micro):
    root, config, teacher = micro
    out, cache = root / "run", root / "cache"

    # 1. killed during the quality stage, once its first swap is measured
    proc = start(config, teacher, out, cache)
    kill_when(proc, lambda: bool(entries(cache, "quality-swap")))
    done1 = entries(cache)
    swaps1 = {
        (e["key"]["block"], e["key"]["variant"], e["key"]["steps"])
        for e in (json.loads(p.read_text()) for p in entries(cache, "quality-swap"))
    }
    assert swaps1 and not (out / "report.md").exists()

    # 2. resumed, killed again during export: while it writes a file (its temporary
    # exists), or at the latest while Core ML converts, once the ONNX file is in place
    proc = start(config, teacher, out, cache)
    exp = out / "export"
    kill_when(
        proc,
        lambda: exp.exists() and any(is_temp(p) or p.name == "model.onnx" for p in exp.iterdir()),
    )
    left = [p for p in exp.iterdir() if is_temp(p)]  # the killed write's (unless it just ended)
    assert not (out / "report.md").exists()
    # (a) everything finished before the first kill was reused, nothing measured twice
    zoo, lat, qual = (
        json.loads((out / f"{n}.json").read_text()) for n in ("zoo_cpu", "latency", "quality")
    )
    assert all(r["cached"] for r in zoo["rows"])
    assert all(b["cached"] for b in lat["blocks"].values())
    resumed = [
        (e, tab["steps"])
        for t in qual["teachers"]
        for tab in t["tables"].values()
        for e in tab["entries"]
    ]
    assert resumed
    for e, steps in resumed:
        if (e["block"], e["variant"], steps) in swaps1:
            assert e["cached"], e
    assert {p.name for p in done1} <= {p.name for p in entries(cache)}

    # 3. resumed to the end: every measurement comes from the cache
    log = finish(start(config, teacher, out, cache))
    assert re.search(
        r"- Measurements: 0 measured now, [1-9][0-9]* reused", (out / "report.md").read_text()
    )
    assert "measurements reused from the cache" in log
    final = {n: json.loads((out / f"{n}.json").read_text()) for n in ("quality", "validate")}
    tables = [tab for t in final["quality"]["teachers"] for tab in t["tables"].values()]
    assert all(e["cached"] for tab in tables for e in tab["entries"])
    assert all(tab["base"]["cached"] for tab in tables)
    assert all(r["quality_cached"] for r in final["validate"]["configs"])

    # (b) nothing half-written, no temporaries left: the killed export's were removed
    assert not any(p.exists() for p in left)
    seen = check_files_whole(out, cache)
    assert seen["json"] > len(done1) and seen["onnx"] == 1 and seen["mlpackage"] == 1

    # (c) an uninterrupted run with a fresh cache holding only the latency entries
    out2, cache2 = root / "run2", root / "cache2"
    for stage in LATENCY_STAGES:
        for p in entries(cache, stage):
            dest = cache2 / p.relative_to(cache)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
    finish(start(config, teacher, out2, cache2))
    fresh = json.loads((out2 / "quality.json").read_text())
    tables = [tab for t in fresh["teachers"] for tab in t["tables"].values()]
    assert not any(e["cached"] for tab in tables for e in tab["entries"])
    assert not any(tab["base"]["cached"] for tab in tables)
    for name in ("quality", "search"):
        a, b = (json.loads((o / f"{name}.json").read_text()) for o in (out, out2))
        assert without(a, {"cached"}) == without(b, {"cached"}), name
    live = {"quality_cached", "latency_cached", "cached"}
    a, b = (json.loads((o / "validate.json").read_text()) for o in (out, out2))
    assert without(a, live) == without(b, live)
    exp = [json.loads((o / "export.json").read_text()) for o in (out, out2)]
    for e in exp:
        e["onnx"].pop("ort_median_s", None)
        e["onnx"]["path"] = e["coreml"]["path"] = "<path>"
    assert exp[0] == exp[1]
    reports = [normalise((o / "report.md").read_text(), out, out2) for o in (out, out2)]
    assert reports[0] == reports[1]


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path):
    """remove_stale_temps removes what a dead writer left (files and folders, at any depth)
    and keeps a running writer's temporaries and every other file."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    sub = tmp_path / "stage"
    sub.mkdir()
    stale_file = sub / f".entry.json.{pid}.abc123.tmp"
    stale_file.write_text('{"half": ')
    stale_dir = tmp_path / f".model.onnx.{pid}.xyz.tmp"
    (stale_dir / "inner").mkdir(parents=True)
    keep = [tmp_path / "entry.json", tmp_path / ".hidden", tmp_path / ".x.notapid.y.tmp"]
    for p in keep:
        p.write_text("{}")
    with atomic_path(tmp_path / "live.json") as live:
        assert live.name.startswith(temp_prefix(tmp_path / "live.json"))
        removed = remove_stale_temps(tmp_path)
        assert live.exists()
        live.write_text("{}")
    assert set(removed) == {stale_file, stale_dir}
    assert not stale_file.exists() and not stale_dir.exists()
    assert all(p.exists() for p in keep) and (tmp_path / "live.json").exists()
