"""The study end to end on a micro configuration: every stage runs, writes its table and
the report; a second run reuses the cache."""

from __future__ import annotations

import json

import pytest

from hybrid_dit import PRESETS
from study.cache import Cache
from study.dataset import TaskSpec
from study.driver import Study, StudyConfig
from study.models import load_model
from study.report import write_report
from study.task import VideoSpec
from study.training import train_teacher

MICRO_VIDEO = VideoSpec(frames=2, height=12, width=16, factor=4)  # latent 48 x 2 x 3 x 4


@pytest.fixture(scope="module")
def micro_teacher(tmp_path_factory):
    """A two-block teacher trained for a few steps on a micro task (its quality is beside the
    point: the harness is)."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    cfg = PRESETS["small"].replace(hidden=32, depth=2, heads=2, head_dim=16, attention="softmax")
    spec = TaskSpec(video=MICRO_VIDEO, n_train=16, n_heldout=2, eval_ts=(0.5,), sample_steps=1)
    train_teacher(path, steps=3, batch=2, spec=spec, cfg=cfg, progress=False, command="test")
    return path


def micro_config(teacher) -> StudyConfig:
    return StudyConfig(
        latency_preset="tiny",
        latency_grid=(2, 3, 4),
        backends=("torch-cpu", "onnxruntime-cpu"),
        target="onnxruntime-cpu",
        variants=("softmax", "relu_linear", "softmax_frame"),
        zoo_grids=((2, 2, 3), (2, 3, 4)),
        zoo_variants=("softmax", "relu_linear"),
        zoo_repeats=1,
        block_repeats=1,
        model_repeats=1,
        gemm_probe=128,
        n_heldout=2,
        eval_ts=(0.5,),
        steps=(1, 2),
        act_batches=1,
        distill_steps=2,
        joint_steps=1,
        top_k=2,
        teacher=str(teacher),
        notes=("micro test configuration",),
    )


def run_all(study: Study) -> None:
    study.zoo()
    study.latency()
    study.quality()
    study.search()
    study.validate()
    study.image_grid()
    study.export()
    write_report(study)


def test_micro_study_end_to_end(tmp_path, micro_teacher):
    cfg = micro_config(micro_teacher)
    cache = Cache(tmp_path / "cache")
    out = tmp_path / "run"
    study = Study(cfg, out, cache, progress=False, log=lambda *a: None)
    run_all(study)
    for name in ("zoo_cpu", "latency", "quality", "search", "validate", "export"):
        table = json.loads((out / f"{name}.json").read_text())
        assert table, name
    report = (out / "report.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7.", "## 9."):
        assert heading in report, heading
    for png in ("latency_vs_n", "pareto", "samples"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000, png
    assert (out / "export" / "model.onnx").is_file()
    assert study.tables["export"]["onnx"]["ok"]
    # the quality tables cover every (block, non-teacher variant) pair at every step count
    (q,) = study.tables["quality"]["teachers"]
    assert set(q["tables"]) == {"1", "2"}
    for table in q["tables"].values():
        assert {(e["block"], e["variant"]) for e in table["entries"]} == {
            (b, v) for b in range(2) for v in ("relu_linear", "softmax_frame")
        }
    assert {r["steps"] for r in q["steps_table"] if r["model"] == "teacher"} >= {1, 2, 4, 8, 20}
    (s,) = study.tables["search"]["teachers"]
    # the best pair is the best-quality front point within the budget, and MobileI2V's
    # recipe is on or behind the front
    within = [p for p in s["front"] if p["latency_ms"] <= s["budget_ms"]]
    assert s["best"] == min(within, key=lambda p: (p["quality"], p["latency_ms"]))
    rec = s["recipe"]
    assert rec["steps"] == 2
    assert any(
        p["latency_ms"] <= rec["latency_ms"] and p["quality"] <= rec["quality"] for p in s["front"]
    )
    assert set(s["by_backend"]) == {"torch-cpu", "onnxruntime-cpu"}
    # the report names the form of softmax attention onnxruntime was timed on
    assert "spinning off, ORT_ENABLE_ALL, softmax as com.microsoft.MultiHeadAttention)" in report
    assert all("steps" in p for p in s["front"])
    val = study.tables["validate"]
    chosen = [r for r in val["configs"] if r["chosen"]]
    assert len(chosen) == 1
    assert (chosen[0]["steps"], chosen[0]["attention"]) == (s["best"]["steps"], s["best"]["config"])
    assert len(val["robustness"]) == 1 and val["robustness_mean"]["teachers"] == 1
    # the mixes predicted from the one-variant models among those timed, per backend
    from bench.latency import full_depth_predictions

    assert val["full_depth_step_prediction"] == {
        b: full_depth_predictions(t["models"], PRESETS["tiny"].depth)
        for b, t in val["whole_models"].items()
    }
    for b, t in val["whole_models"].items():  # a GEMM timed in the whole models' rounds
        assert t["gemm"]["n"] == 128, b
        assert all(0 < m["fraction_of_gemm"] for m in t["models"]), b
        assert f"- {b}: whole steps at " in report
    for r in val["configs"]:  # predicted vs measured on the target backend, with intervals
        x = r["onnxruntime-cpu"]
        assert x["step_ci_ms"][0] <= x["step_measured_ms"] <= x["step_ci_ms"][1]
        m = next(
            m
            for m in val["whole_models"]["onnxruntime-cpu"]["models"]
            if m["attention"] == r["attention"]
        )
        assert x["step_fraction_of_gemm"] == m["fraction_of_gemm"]
        # the prediction is wired to this run's own block table and host loop
        blocks = study.tables["latency"]["blocks"]["onnxruntime-cpu"]
        per = {b["variant"]: b["median_ms"] for b in blocks["variants"]}
        want = blocks["overhead"]["median_ms"] + sum(per[v] for v in r["attention"])
        assert x["step_predicted_ms"] == pytest.approx(want)
        # and the same sum from block stacks timed in the whole models' own rounds
        same = val["whole_models"]["onnxruntime-cpu"]["same_rounds_blocks"]
        per_same = {b["variant"]: b["median_ms"] for b in same["variants"]}
        want_same = same["overhead"]["median_ms"] + sum(per_same[v] for v in r["attention"])
        assert x["step_same_rounds_predicted_ms"] == pytest.approx(want_same)
        host = study.tables["latency"]["host"]
        assert x["clip_predicted_ms"] == pytest.approx(
            host["fixed_ms"] + r["steps"] * (want + host["per_step_ms"])
        )

    # each stage re-runs from the files the study wrote: the search from latency.json (one
    # block table per backend, --backend picks) and quality.json
    from mobileattn.cli import main

    argv = ["search", "--latency", str(out / "latency.json"), "--quality"]
    argv += [str(out / "quality.json"), "--budget", f"{s['budget_ms']!r}ms"]
    assert main([*argv, "--backend", "onnxruntime-cpu", "--out", str(tmp_path / "s.json")]) == 0
    again_s = json.loads((tmp_path / "s.json").read_text())
    assert again_s["best"] == s["best"]
    assert again_s["front"] == s["front"]
    assert main(argv) == 2  # two block tables and no --backend: a clear error, not a guess

    # a second run on the same machine reuses every measurement
    again = Study(
        cfg, tmp_path / "run2", Cache(tmp_path / "cache"), progress=False, log=lambda *a: None
    )
    again.zoo()
    again.latency()
    again.quality()
    assert again.cache.hits and not again.cache.misses
    assert again.tables["quality"]["teachers"][0]["tables"]["1"]["entries"] == [
        {**e, "cached": True} for e in q["tables"]["1"]["entries"]
    ]


def test_teacher_file_round_trip(micro_teacher):
    model, meta = load_model(micro_teacher)
    assert model.cfg.depth == 2 and meta["command"] == "test"
    assert meta["task"]["video"] == MICRO_VIDEO.to_dict()
    model2, _ = load_model(micro_teacher, pattern="relu_linear")
    assert model2.cfg.attention == ("relu_linear", "relu_linear")


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-teacher"):
        load_model(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="is not a mobileattn model file"):
        load_model(bad)


def test_native_check_states_a_shortened_recipe():
    from study.report import _native_length

    assert _native_length({"native_train_steps": 3000, "teacher_train_steps": 3000}) == ""
    assert _native_length({}) == ""
    said = _native_length({"native_train_steps": 1500, "teacher_train_steps": 3000})
    assert "1500" in said and "3000" in said


def test_native_check_refuses_nonpositive_train_steps(capsys):
    from study.native_check import main

    with pytest.raises(SystemExit) as e:
        main(["--prepare", "--train-steps", "0"])
    assert e.value.code == 2
    assert "--train-steps must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "chosen"], "--only goes with --prepare"),
        (["--prepare", "--only", "chosen"], "--only chosen needs --run"),
    ],
)
def test_native_check_only_needs_prepare_and_a_run(capsys, argv, message):
    from study.native_check import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_top_k_zero_builds_no_neighbours_and_negative_is_refused():
    assert StudyConfig.from_dict({"top_k": 0}).top_k == 0
    assert "0 front neighbour(s)" in " ".join(StudyConfig.from_dict({"top_k": 0}).left_out())
    with pytest.raises(ValueError, match="top_k must be an int >= 0, got -1"):
        StudyConfig.from_dict({"top_k": -1})


def test_gemm_probe_zero_is_none_and_negative_is_refused():
    assert StudyConfig.from_dict({"gemm_probe": 0}).gemm_probe == 0
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match=f"gemm_probe must be an int >= 0, got {bad!r}"):
            StudyConfig.from_dict({"gemm_probe": bad})


def test_validate_section_states_the_fractions_of_gemm():
    """The report quotes the whole steps' range of fractions of the GEMM timed in their own
    rounds, and the lowest with its interval; without a probe, no such line."""
    from study.report import _validate_section

    b = "torch-cpu"
    models = [
        {"pattern": "S*2", "fraction_of_gemm": 0.731, "fraction_of_gemm_ci": [0.69, 0.75]},
        {"pattern": "L*2", "fraction_of_gemm": 0.764, "fraction_of_gemm_ci": [0.74, 0.78]},
    ]
    v = {
        "whole_models": {b: {"models": models, "gemm": {"n": 2048, "gflops": 312.6}}},
        "configs": [],
        "spearman_latency": {b: None},
        "worst_step_prediction_error": {b: 0.08},
        "spearman_quality": None,
    }
    text = "\n".join(_validate_section(v, StudyConfig(target=b)))
    assert (
        "- torch-cpu: whole steps at 73-76% of the fp32 GEMM rate (analytic FLOPs over time; "
        "the rate of a (2048 x 2048) GEMM through torch-cpu's own matmul, timed in the same "
        "rounds: 313 GFLOP/s); the lowest, `S*2`, 73% [69, 75] (goal 80%)."
    ) in text
    v["whole_models"][b]["gemm"] = None
    assert "GEMM" not in "\n".join(_validate_section(v, StudyConfig(target=b)))


def test_validate_section_states_the_full_depth_prediction():
    """With the one-variant references built (validate_references), the report gives the
    worst error of the mixes predicted from them, with its interval."""
    from study.report import _validate_section

    b = "onnxruntime-cpu"
    full = [
        {"pattern": "L*3,S", "error": 0.012, "error_ci": [-0.02, 0.03], "paired": True},
        {"pattern": "S,L*3", "error": -0.041, "error_ci": [-0.07, -0.01], "paired": True},
    ]
    v = {
        "whole_models": {b: {"models": []}},
        "configs": [],
        "spearman_latency": {b: None},
        "worst_step_prediction_error": {b: 0.08},
        "spearman_quality": None,
        "full_depth_step_prediction": {b: full},
    }
    text = "\n".join(_validate_section(v, StudyConfig()))
    assert "full-depth models): worst error -4.1% [-7.0, -1.0] over 2 models" in text
    v["full_depth_step_prediction"] = {b: []}
    assert "full-depth" not in "\n".join(_validate_section(v, StudyConfig()))
