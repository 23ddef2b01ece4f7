"""Few-step students (study.students, `mobileattn distill`): what a student samples, that
distillation is deterministic and resumable after SIGKILL, and the errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hybrid_dit import PRESETS, sample
from mobileattn.cli import main
from study.dataset import TaskSpec
from study.models import load_model
from study.students import StudentSpec, distill_student
from study.task import VideoSpec
from study.training import train_teacher

ROOT = Path(__file__).resolve().parents[1]
VIDEO = VideoSpec(frames=2, height=12, width=16, factor=4)
CFG = PRESETS["small"].replace(hidden=32, depth=2, heads=2, head_dim=16, attention="softmax")
SPEC = dict(pool=8, train_steps=6, batch=2)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    spec = TaskSpec(video=VIDEO, n_train=16, n_heldout=2, eval_ts=(0.5,), sample_steps=1)
    train_teacher(path, steps=4, batch=2, spec=spec, cfg=CFG, progress=False, command="test")
    return path


def test_a_students_sample_keeps_frame_zero_and_its_shape(teacher, tmp_path):
    out = tmp_path / "s2.safetensors"
    side = distill_student(
        teacher, out, StudentSpec(steps=2, **SPEC), tmp_path, "cmd", progress=False, n_heldout=2
    )
    assert side["student_steps"] == 2 and side["command"] == "cmd"
    assert side["teacher"].endswith("teacher.safetensors")
    assert side["task"]["video"] == VIDEO.to_dict()
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["student_steps"] == 2 and sidecar["config"]["sample_steps"] == 2
    student, meta = load_model(out)
    assert student.cfg.sample_steps == 2 and meta["student_steps"] == 2
    gen = torch.Generator().manual_seed(3)
    ff = torch.randn(2, 48, 3, 4, generator=gen)
    video = sample(student, ff, 0.4, 2, (2, 3, 4), generator=gen)
    assert video.shape == (2, 48, 2, 3, 4)
    assert torch.equal(video[:, :, 0], ff)  # the first frame stays exact
    with pytest.raises(ValueError, match=r"2-step student .* must be sampled with steps=2"):
        sample(student, ff, 0.4, 4, (2, 3, 4))


def test_distillation_is_deterministic_for_a_seed(teacher, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for out in (a, b):
        distill_student(
            teacher, out, StudentSpec(steps=1, **SPEC), tmp_path, progress=False, n_heldout=2
        )
    sa, sb = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = tmp_path / "c.safetensors"
    distill_student(
        teacher, c, StudentSpec(steps=1, seed=1, **SPEC), tmp_path, progress=False, n_heldout=2
    )
    sc = load_model(c)[0].state_dict()
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_distill_resumes_after_sigkill_with_no_half_written_file(teacher, tmp_path):
    out = tmp_path / "s.safetensors"
    argv = [sys.executable, "-m", "mobileattn.cli", "distill", "--teacher", str(teacher)]
    # enough steps that the run cannot finish between its first checkpoint and the kill
    argv += ["--steps", "2", "--out", str(out), "--train-steps", "120", "--pool", "8"]
    argv += ["--batch", "2", "--checkpoint-every", "5", "--cache", str(tmp_path / "c")]
    argv += ["--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out.with_name(f".{out.stem}.checkpoint.pt")
    t0 = time.monotonic()
    while not ckpt.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() - t0 < 240, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it was killed: give it more --train-steps"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not out.exists()  # never a half-written student
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not ckpt.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    resumed, _ = load_model(out)
    # the same student as one uninterrupted run
    ref = tmp_path / "ref.safetensors"
    argv_ref = [a if a != str(out) else str(ref) for a in argv]
    assert (
        subprocess.run(argv_ref, cwd=ROOT, env=env, capture_output=True, timeout=600).returncode
        == 0
    )
    full, _ = load_model(ref)
    sr, sf = resumed.state_dict(), full.state_dict()
    assert all(torch.equal(sr[k], sf[k]) for k in sr)


def test_bad_input_gets_a_clear_error(teacher, tmp_path, capsys):
    assert main(["distill", "--teacher", str(teacher), "--steps", "0"]) == 2
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(teacher), "--steps", "3"]) == 2  # 3 does not divide 20
    assert "--steps (3) must divide teacher_steps (20)" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(tmp_path / "none.safetensors"), "--steps", "2"]) == 2
    assert "--teacher: no such file" in capsys.readouterr().err
    student = tmp_path / "st.safetensors"
    distill_student(
        teacher, student, StudentSpec(steps=2, **SPEC), tmp_path, progress=False, n_heldout=2
    )
    with pytest.raises(ValueError, match="is a 2-step student, not a teacher"):
        distill_student(student, tmp_path / "x.safetensors", StudentSpec(steps=1, **SPEC))
    # a teacher of another shape than its recorded task
    from study.models import save_model

    model, meta = load_model(teacher)
    from hybrid_dit import HybridDiT

    other = HybridDiT(model.cfg.replace(in_channels=12))
    odd = tmp_path / "odd.safetensors"
    save_model(other, odd, meta)
    with pytest.raises(ValueError, match="has 12 input channels but its task's latents have 48"):
        distill_student(odd, tmp_path / "y.safetensors", StudentSpec(steps=1, **SPEC))


def test_students_of_one_two_and_four_steps_share_one_trajectory_pool(teacher, tmp_path):
    cache = tmp_path / "pool"
    for k in (1, 2, 4):
        spec = StudentSpec(steps=k, **{**SPEC, "train_steps": 1})
        distill_student(
            teacher, tmp_path / f"s{k}.safetensors", spec, cache, progress=False, n_heldout=2
        )
    assert len(list(cache.glob("pool-*.safetensors"))) == 1


def test_the_study_refuses_a_student_of_another_shape(teacher, tmp_path):
    import shutil

    from hybrid_dit import HybridDiT
    from study.cache import Cache
    from study.driver import Study, StudyConfig
    from study.models import save_model, student_path

    t = tmp_path / "t.safetensors"
    shutil.copy(teacher, t)
    model, meta = load_model(t)
    odd = HybridDiT(model.cfg.replace(hidden=64, head_dim=32, sample_steps=2))
    save_model(odd, student_path(t, 2), meta)
    cfg = StudyConfig(latency_preset="tiny", latency_grid=(2, 3, 4), teacher=str(t), n_heldout=2)
    study = Study(cfg, tmp_path / "run", Cache(tmp_path / "c"), progress=False, log=lambda *a: None)
    with pytest.raises(ValueError, match="is not a 2-step student of"):
        study.teachers()
    # and a student given as the teacher
    with pytest.raises(ValueError, match="is a 2-step student, not a teacher"):
        Study(
            StudyConfig(
                latency_preset="tiny", latency_grid=(2, 3, 4), teacher=str(student_path(t, 2))
            ),
            tmp_path / "run2",
            Cache(tmp_path / "c"),
            progress=False,
            log=lambda *a: None,
        ).teachers()
