"""bench.model_cpu's predictor analysis on synthetic tables: the held-out (leave one out)
calibration, the in-model vs table ratio, and re-analysis of a saved result."""

from __future__ import annotations

import json
import math

import pytest

from bench.latency import scaled_leave_one_out
from bench.model_cpu import (
    groups_of,
    in_model_blocks,
    leave_one_out,
    main,
    predictor_check,
    predictor_summary,
)
from hybrid_dit import PRESETS, format_pattern

OVERHEAD, DEPTH = 10.0, 4
BLOCK = {"softmax": 100.0, "relu_linear": 60.0}  # in-model block latencies, ms
PATTERNS = [
    ["softmax"] * 4,
    ["relu_linear"] * 4,
    ["relu_linear", "softmax", "relu_linear", "softmax"],
    ["softmax", "softmax", "relu_linear", "relu_linear"],
    ["relu_linear"] * 3 + ["softmax"],
]


def synthetic_table(table_scale: float = 1.0, drop=()) -> dict:
    """Whole models that are exactly overhead + the sum of in-model blocks, and a block
    table whose latencies are the in-model ones times `table_scale`."""
    models = [
        {"pattern": ",".join(p), "attention": p, "median_ms": OVERHEAD + sum(BLOCK[v] for v in p)}
        for i, p in enumerate(PATTERNS)
        if i not in drop
    ]
    return {
        "blocks": {
            "overhead": {"median_ms": OVERHEAD},
            "variants": [{"variant": v, "median_ms": ms * table_scale} for v, ms in BLOCK.items()],
        },
        "models": {"models": models},
    }


def test_leave_one_out_recovers_additive_models_exactly():
    res = leave_one_out(synthetic_table())
    assert res["configs"] == len(PATTERNS)
    assert res["worst_error"] == pytest.approx(0, abs=1e-9)
    assert res["fitted_block_ms"] == pytest.approx(BLOCK)


def test_leave_one_out_holds_out_every_copy_of_a_pattern():
    """A pattern timed in two groups (onnxruntime's one-variant models): both copies are
    held out together, so neither is predicted from the other, and it counts once."""
    t = synthetic_table()
    first = t["models"]["models"][0]
    t["models"]["models"].append({**first, "median_ms": 1.2 * first["median_ms"]})
    res = leave_one_out(t)
    copies = [r["error"] for r in res["rows"] if r["pattern"] == first["pattern"]]
    # from the four other patterns alone: exact, so 0 and 1 / 1.2 - 1 (the other copy in
    # the fit would have pulled the first copy's prediction off by ~10%)
    assert copies == pytest.approx([0, 1 / 1.2 - 1], abs=1e-9)
    assert res["configs"] == len(PATTERNS)
    scaled = scaled_leave_one_out(t)
    assert scaled["configs"] == len(PATTERNS) and len(scaled["rows"]) == len(PATTERNS) + 1


def test_leave_one_out_skips_a_model_the_others_cannot_predict():
    # two models left (all softmax; L*3,S): holding one out leaves one equation for two
    # block latencies, so neither can be predicted from the other
    t = synthetic_table(drop=(1, 2, 3))
    res = leave_one_out(t)
    assert res["configs"] == 0 and res["worst_error"] is None


def test_leave_one_out_error_is_held_out():
    t = synthetic_table()
    t["models"]["models"][0]["median_ms"] *= 1.2  # one disturbed measurement
    res = leave_one_out(t)
    held_out = next(r for r in res["rows"] if r["pattern"] == ",".join(PATTERNS[0]))
    # predicted from the four undisturbed models alone: exact, so 1 / 1.2 - 1 of measured
    assert held_out["error"] == pytest.approx(1 / 1.2 - 1)
    assert res["worst_error"] >= abs(held_out["error"])


def test_in_model_ratio_shows_what_the_table_misses():
    ratios = {b["variant"]: b["ratio"] for b in in_model_blocks(synthetic_table(0.8), DEPTH)}
    assert ratios == pytest.approx({"softmax": 1.25, "relu_linear": 1.25})


def reanalysed(tmp_path, rows: list[dict], table: dict) -> dict:
    """A saved torch-cpu result of `rows` and `table` through `--reanalyse`: the document
    it writes."""
    doc = {
        "benchmark": "bench.model_cpu",
        "preset": "tiny",
        "config": {"depth": DEPTH},
        "grid": [1, 2, 2],
        "tokens": 4,
        "gemm_gflops": 2.0,
        "gemm_gflops_after": 2.0,
        "gemm_gflops_by_backend": {"torch-cpu": 2.0},
        "load_average_before": [0.0] * 3,
        "load_average_after": [0.0] * 3,
        "rows": rows,
        "tables": {"torch-cpu": table},
        "predictor": {},
    }
    src, out = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text(json.dumps(doc))
    assert main(["--reanalyse", str(src), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_reanalyse_rewrites_the_predictor_from_a_saved_result(tmp_path, capsys):
    t = synthetic_table(0.9)
    rows = []
    for m in t["models"]["models"]:
        pred = OVERHEAD + 0.9 * sum(BLOCK[v] for v in m["attention"])
        rows.append(
            {
                "pattern": m["pattern"],
                "backend": "torch-cpu",
                "median_ms": m["median_ms"],
                "ci_low_ms": m["median_ms"],
                "ci_high_ms": m["median_ms"],
                "flops": {"total": 1e9},
                "gflops": 1.0,
                "fraction_of_gemm": 0.5,
                "predicted_ms": pred,
                "prediction_error": pred / m["median_ms"] - 1,
            }
        )
    res = reanalysed(tmp_path, rows, t)["predictor"]["torch-cpu"]
    assert res == predictor_summary(rows, {"torch-cpu": t}, DEPTH)["torch-cpu"]
    assert res["table"]["worst_error"] == pytest.approx(
        max(abs(r["prediction_error"]) for r in rows)
    )
    assert res["table"]["configs"] == len(rows) and res["same_rounds"]["configs"] == 0
    assert not res["same_rounds"]["goal_met"]
    assert res["leave_one_out"]["worst_error"] == pytest.approx(0, abs=1e-9)
    assert "leave one out" in capsys.readouterr().out


def test_reanalyse_refuses_other_files(tmp_path):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"benchmark": "something else"}))
    with pytest.raises(SystemExit):
        main(["--reanalyse", str(bad), "--out", str(tmp_path / "o.json")])


def test_hold_sessions_counts_weights_per_session_and_one_shared_arena():
    from bench.latency import (
        ARENA_WEIGHT_FACTOR,
        SESSION_MEMORY_SHARE,
        SESSION_WEIGHT_FACTOR,
        hold_sessions,
    )

    gib = 2**30
    # room for exactly 8 sessions of a 1 GiB model and the arena they share
    available = (8 * SESSION_WEIGHT_FACTOR + ARENA_WEIGHT_FACTOR) * gib / SESSION_MEMORY_SHARE
    assert hold_sessions(8, gib, available=1.001 * available)
    assert not hold_sessions(8, gib, available=0.999 * available)
    assert not hold_sessions(9, gib, available=1.001 * available)
    # the arena is counted once: a second session costs only its weights
    one = (SESSION_WEIGHT_FACTOR + ARENA_WEIGHT_FACTOR) * gib / SESSION_MEMORY_SHARE
    assert hold_sessions(1, gib, available=1.001 * one)
    assert not hold_sessions(2, gib, available=1.001 * one)
    extra = SESSION_WEIGHT_FACTOR * gib / SESSION_MEMORY_SHARE
    assert hold_sessions(2, gib, available=1.001 * (one + extra))


def test_held_group_size_fits_the_eight_mobilei2v_patterns_in_19_gb():
    """What bench.model_cpu's one onnxruntime group needs on this project's CI machine."""
    from bench.latency import held_group_size

    cfg = PRESETS["mobilei2v"]
    assert held_group_size(cfg, available=19 * 10**9) >= 8
    assert held_group_size(cfg, available=4 * 10**9) == 1  # at least one, always


@pytest.mark.parametrize("hold", [True, False])
def test_model_table_on_onnxruntime_holds_or_loads_sessions(monkeypatch, hold):
    pytest.importorskip("onnxruntime")
    import bench.latency as lat

    monkeypatch.setattr(lat, "hold_sessions", lambda n, w, available=None: hold)
    res = lat.model_table("tiny", (2, 4, 4), "onnxruntime-cpu", ["S", "L"], repeats=2,
                          progress=False)  # fmt: skip
    assert [m["pattern"] for m in res["models"]] == ["softmax*2", "relu_linear*2"]
    assert all(m["repeats"] == 2 and m["median_ms"] > 0 for m in res["models"])
    assert ("one onnxruntime session at a time" in res["measured_as"]) is not hold


def spy_rounds(monkeypatch) -> list:
    """The candidates' names of every bench.latency.time_interleaved call from now on
    (sorted, one list per call); the calls still time for real."""
    import bench.latency as lat

    rounds = []
    real = lat.time_interleaved

    def spy(fns, *args, **kw):
        rounds.append(sorted(fns))
        return real(fns, *args, **kw)

    monkeypatch.setattr(lat, "time_interleaved", spy)
    return rounds


@pytest.mark.parametrize("backend", ["torch-cpu", "onnxruntime-cpu"])
def test_model_table_scales_each_model_by_the_gemm_of_its_own_rounds(monkeypatch, backend):
    """gemm_probe_n: a GEMM through the backend's matmul is one more candidate of the
    models' rounds, and a model's fraction of GEMM is the median over rounds of its
    achieved rate over that round's GEMM rate, with an interval that holds it."""
    if backend == "onnxruntime-cpu":
        pytest.importorskip("onnxruntime")
    import statistics

    import bench.latency as lat
    from bench.machine import gemm_flops
    from hybrid_dit import PRESETS, model_flops

    rounds = spy_rounds(monkeypatch)
    n = 64
    res = lat.model_table("tiny", (2, 4, 4), backend, ["S", "L"], repeats=3, progress=False,
                          gemm_probe_n=n)  # fmt: skip
    assert rounds == [sorted(["__gemm__", "relu_linear*2", "softmax*2"])]
    g = res["gemm"]
    assert g["n"] == n and g["repeats"] == 3 and backend in g["what"]
    assert g["gflops"] == pytest.approx(gemm_flops(n) / g["median_ms"] / 1e6)
    for m in res["models"]:
        flops = model_flops(PRESETS["tiny"].with_attention(m["attention"]), (2, 4, 4))["total"]
        pairs = zip(m["times_ms"], g["times_ms"], strict=True)
        want = statistics.median((flops / t) / (gemm_flops(n) / tg) for t, tg in pairs)
        assert m["fraction_of_gemm"] == pytest.approx(want)
        lo, hi = m["fraction_of_gemm_ci"]
        assert 0 < lo <= m["fraction_of_gemm"] <= hi
    plain = lat.model_table("tiny", (2, 4, 4), backend, ["S"], repeats=1, progress=False)
    assert plain["gemm"] is None and "fraction_of_gemm" not in plain["models"][0]
    for bad in (0, 2.5, True):
        with pytest.raises(
            ValueError, match=f"gemm_probe_n must be a positive int or None, got {bad}"
        ):
            lat.model_table("tiny", (2, 4, 4), backend, ["S"], repeats=1, progress=False,
                            gemm_probe_n=bad)  # fmt: skip


@pytest.mark.parametrize("hold", [True, False])
def test_model_table_times_block_stacks_in_the_models_rounds(monkeypatch, hold):
    """same_rounds: the variants' block stacks and the overhead are timed in the whole
    models' own interleaved rounds (one time_interleaved call, the same repeats), and each
    model's same-round prediction is the overhead + block sum of that table."""
    pytest.importorskip("onnxruntime")
    import bench.latency as lat

    rounds = spy_rounds(monkeypatch)
    monkeypatch.setattr(lat, "hold_sessions", lambda n, w, available=None: hold)
    res = lat.model_table("tiny", (2, 4, 4), "onnxruntime-cpu", ["S", "L,S"], repeats=2,
                          progress=False, same_rounds=["relu_linear", "softmax"],
                          stack=1)  # fmt: skip
    blocks = ["block:__overhead__", "block:relu_linear", "block:softmax"]
    assert rounds == [sorted([*blocks, "relu_linear,softmax", "softmax*2"])]
    same = res["same_rounds_blocks"]
    assert [r["variant"] for r in same["variants"]] == ["relu_linear", "softmax"]
    assert all(r["repeats"] == 2 for r in same["variants"]) and same["overhead"]["repeats"] == 2
    per = {r["variant"]: r["median_ms"] for r in same["variants"]}
    for m in res["models"]:
        want = same["overhead"]["median_ms"] + sum(per[v] for v in m["attention"])
        assert m["same_rounds_predicted_ms"] == pytest.approx(want)
        assert m["same_rounds_error"] == pytest.approx(want / m["median_ms"] - 1)
    with pytest.raises(ValueError, match=r"stack must be an int in \[1, depth=2\], got 3"):
        lat.model_table("tiny", (2, 4, 4), "torch-cpu", ["S"], same_rounds=["softmax"], stack=3)
    with pytest.raises(KeyError):
        lat.model_table("tiny", (2, 4, 4), "torch-cpu", ["S"], same_rounds=["nope"])


def test_ab_model_compares_a_revision_with_the_working_tree(tmp_path):
    from bench.ab_model import main as ab_main

    out = tmp_path / "ab.json"
    ab_main(["--preset", "tiny", "--grid", "2x4x4", "--repeats", "3", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    # HEAD's model.py and the working tree's compute the same function of the same weights
    assert row["max_abs_diff_rel"] < 1e-5
    assert row["HEAD"]["repeats"] == row["working tree"]["repeats"] == 3
    assert "working tree" in row["verdict"] and "HEAD" in row["verdict"]


def test_ab_model_names_a_bad_revision():
    from bench.ab_model import model_at

    with pytest.raises(ValueError, match=r"rev: no hybrid_dit/model\.py at git revision"):
        model_at("no-such-revision")


def test_scaled_leave_one_out_calibrates_one_factor_held_out():
    # a table 0.8x the in-model latencies: the held-out factor is 1.25 and exact
    res = scaled_leave_one_out(synthetic_table(0.8))
    assert res["configs"] == len(PATTERNS)
    assert res["factor"] == pytest.approx(1.25)
    assert res["worst_error"] == pytest.approx(0, abs=1e-9)
    t = synthetic_table(0.8)
    t["models"]["models"][1]["median_ms"] *= 1.1  # one disturbed model
    res = scaled_leave_one_out(t)
    held = next(r for r in res["rows"] if r["pattern"] == ",".join(PATTERNS[1]))
    # predicted from the others' factor (all 1.25, exact): 1 / 1.1 - 1 of measured
    assert held["error"] == pytest.approx(1 / 1.1 - 1)
    assert res["worst_error"] == pytest.approx(abs(1 / 1.1 - 1))
    assert scaled_leave_one_out(synthetic_table(drop=(1, 2, 3, 4)))["configs"] == 0


def check_rows(errors, measured=None):
    measured = measured or [100.0 * (i + 1) for i in range(len(errors))]
    return [
        {"median_ms": m, "p": m * (1 + e), "e": e, "ci": [e - 0.01, e + 0.01]}
        for m, e in zip(measured, errors, strict=True)
    ]


def test_predictor_goal_needs_six_models_the_error_and_the_ranking():
    ok = predictor_check(check_rows([0.04, -0.03, 0.0, 0.02, -0.049, 0.01]), "p", "e", "ci")
    assert ok["configs"] == 6 and ok["goal_met"] and ok["spearman"] == pytest.approx(1.0)
    assert not ok["intervals_within_goal"]  # -0.049's interval reaches -5.9%
    assert not predictor_check(check_rows([0.0] * 5), "p", "e")["goal_met"]  # five models
    assert not predictor_check(check_rows([0.0] * 5 + [0.051]), "p", "e")["goal_met"]
    # two models swapped in rank: Spearman 0.943 < 0.95 although every error is small
    swapped = check_rows([0.0, 0.0, 0.03, -0.03, 0.0, 0.0], [100, 200, 300, 306, 500, 600])
    res = predictor_check(swapped, "p", "e")
    assert res["worst_error"] <= 0.05 and res["spearman"] < 0.95 and not res["goal_met"]
    # a pattern timed twice counts once towards the configs, and both copies are checked
    twice = check_rows([0.0, 0.0, 0.0, 0.0, 0.0, 0.06])
    for i, r in enumerate(twice):
        r["pattern"] = f"p{min(i, 4)}"
    res = predictor_check(twice, "p", "e")
    assert res["configs"] == 5 and res["worst_error"] == pytest.approx(0.06)
    none = predictor_check([{"median_ms": 1.0}], "p", "e", "ci")
    assert none["configs"] == 0 and not none["goal_met"] and not none["intervals_within_goal"]


def test_onnxruntime_groups_fit_in_memory_and_keep_neighbours_together(monkeypatch):
    import bench.model_cpu as mc
    from hybrid_dit import PRESETS

    cfg = PRESETS["tiny"].replace(depth=DEPTH, attention="softmax")
    blocks = synthetic_table()["blocks"]
    pats = ["S*4", "L*4", "L,S,L,S", "S,S,L,L", "L*3,S"]
    monkeypatch.setattr(mc, "held_group_size", lambda cfg: 2)
    # no room beside the two one-variant models: groups without them
    groups = groups_of(cfg, pats, "onnxruntime-cpu", blocks)
    # sorted by predicted latency (0, 1, 2, 2, 4 softmax blocks), two per group
    assert groups == [["L*4", "L*3,S"], ["L,S,L,S", "S,S,L,L"], ["S*4"]]
    assert groups_of(cfg, pats, "torch-cpu", blocks) == [pats]
    monkeypatch.setattr(mc, "held_group_size", lambda cfg: 4)
    # the one-variant models beside every group's mixes, each group in predicted order
    assert groups_of(cfg, pats, "onnxruntime-cpu", blocks) == [
        ["L*4", "L*3,S", "L,S,L,S", "S*4"], ["L*4", "S,S,L,L", "S*4"]
    ]  # fmt: skip
    once = groups_of(cfg, pats, "onnxruntime-cpu", blocks, references_everywhere=False)
    assert once == [["L*4", "L*3,S", "L,S,L,S", "S,S,L,L"], ["S*4"]]
    monkeypatch.setattr(mc, "held_group_size", lambda cfg: 5)  # all fit: one group
    assert groups_of(cfg, pats, "onnxruntime-cpu", blocks) == [
        ["L*4", "L*3,S", "L,S,L,S", "S,S,L,L", "S*4"]
    ]  # fmt: skip


def test_model_table_clocks_every_block_inside_the_whole_models():
    import bench.latency as lat

    res = lat.model_table("tiny", (2, 4, 4), "torch-cpu", ["S", "L,S"], repeats=3,
                          progress=False, block_clock=True)  # fmt: skip
    for m in res["models"]:
        inside = m["in_model"]
        assert set(inside["blocks"]) == set(m["attention"])
        for v, b in inside["blocks"].items():
            # every block of the variant in every timed call (warmup calls dropped)
            assert b["repeats"] == 3 * m["attention"].count(v)
            assert 0 < b["median_ms"] < m["median_ms"]
        assert inside["rest"]["repeats"] == 3
        assert inside["rest"]["median_ms"] < m["median_ms"]
        blocks_per_call = [
            w - r for w, r in zip(m["times_ms"], inside["rest"]["times_ms"], strict=True)
        ]
        assert all(0 < x < w for x, w in zip(blocks_per_call, m["times_ms"], strict=True))
    with pytest.raises(ValueError, match="block_clock needs backend 'torch-cpu'"):
        lat.model_table("tiny", (2, 4, 4), "onnxruntime-cpu", ["S"], block_clock=True)


def test_in_model_row_refuses_a_clock_that_missed_calls():
    from bench.latency import in_model_row

    t = {"times": [1.0, 1.0], "block_seconds": [[0.4, 0.4]]}
    with pytest.raises(ValueError, match="block clock: 1 calls"):
        in_model_row(["softmax", "softmax"], t)


def test_error_interval_needs_the_repeats_of_every_part():
    from bench.latency import error_ci

    blocks = {
        "overhead": {"median_ms": 10.0, "times_ms": [10.0] * 3},
        "variants": [{"variant": "softmax", "median_ms": 45.0, "times_ms": [45.0] * 3}],
    }
    row = {"median_ms": 80.0, "times_ms": [80.0] * 3}
    assert error_ci(blocks, ["softmax", "softmax"], row) == pytest.approx([0.25, 0.25])
    del blocks["overhead"]["times_ms"]
    assert error_ci(blocks, ["softmax", "softmax"], row) is None


def timed_models(scale=None, groups=None, rounds: int = 9, seed: int = 0) -> list[dict]:
    """The synthetic models with per-round times: each round's drift moves every model
    alike, and `scale` multiplies one pattern's times (a non-additive model)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    drift = np.exp(0.2 * rng.standard_normal(rounds))
    out = []
    for i, m in enumerate(synthetic_table()["models"]["models"]):
        f = (scale or {}).get(m["pattern"], 1.0)
        times = [float(x) for x in m["median_ms"] * f * drift]
        out.append({**m, "median_ms": float(np.median(times)), "times_ms": times,
                    "group": 0 if groups is None else groups[i]})  # fmt: skip
    return out


def test_full_depth_predictor_interpolates_the_one_variant_models():
    """Mixes from the one-variant models: exact on additive models, the one-variant models
    themselves are the calibration (not checked), a disturbed mix shows its error, and
    the interval is paired only where all were timed in the same rounds."""
    from bench.latency import full_depth_predictions

    rows = full_depth_predictions(timed_models(), DEPTH)
    assert [r["pattern"] for r in rows] == [",".join(p) for p in PATTERNS[2:]]
    for r in rows:
        assert r["error"] == pytest.approx(0, abs=1e-12) and r["paired"]
        assert r["error_ci"] == pytest.approx([0, 0], abs=1e-12)  # drift cancels, paired
    mix = ",".join(PATTERNS[3])
    (bad,) = [r for r in full_depth_predictions(timed_models({mix: 1.1}), DEPTH)
              if r["pattern"] == mix]  # fmt: skip
    assert bad["error"] == pytest.approx(1 / 1.1 - 1)
    # per round: the prediction from that round's one-variant models over that round's mix
    assert bad["error_per_round"] == pytest.approx(1 / 1.1 - 1)
    assert bad["error_per_round_ci"] == pytest.approx([1 / 1.1 - 1] * 2)
    for r in rows:
        assert r["error_per_round"] == pytest.approx(0, abs=1e-12)
    # one slow round of a mix moves its per-round errors by that round only
    slow = timed_models()
    m = next(x for x in slow if x["pattern"] == mix)
    m["times_ms"] = [3 * t if i == 0 else t for i, t in enumerate(m["times_ms"])]
    (one,) = [r for r in full_depth_predictions(slow, DEPTH) if r["pattern"] == mix]
    assert one["error_per_round"] == pytest.approx(0, abs=1e-12)
    # all softmax timed in another group: unpaired, and the drift widens the interval
    split = full_depth_predictions(timed_models(groups=[1, 0, 0, 0, 0]), DEPTH)
    assert not any(r["paired"] for r in split)
    assert not any("error_per_round" in r for r in split)
    assert all(r["error_ci"][1] - r["error_ci"][0] > 0.05 for r in split)
    # the one-variant models timed again in the mix's group (another drift): a mix takes
    # the copies from its own group, so it pairs again
    moved = timed_models(groups=[1, 0, 0, 0, 0])
    moved += [{**m, "group": 1, "times_ms": [1.3 * t for t in m["times_ms"]],
               "median_ms": 1.3 * m["median_ms"]} for m in moved[1:2]]  # fmt: skip
    moved += [{**m, "group": 0, "times_ms": [0.8 * t for t in m["times_ms"]],
               "median_ms": 0.8 * m["median_ms"]} for m in moved[:1]]  # fmt: skip
    both = full_depth_predictions(moved, DEPTH)
    assert [r["pattern"] for r in both] == [r["pattern"] for r in rows]
    for r in both:  # all three mixes in group 0 beside group 0's copies: paired
        assert r["paired"] and r["error_ci"][1] - r["error_ci"][0] < 0.05
    # without a one-variant model of each of its variants, a mix is not predicted
    assert full_depth_predictions(timed_models()[1:], DEPTH) == []
    with pytest.raises(ValueError, match="4 blocks, expected 3"):
        full_depth_predictions(timed_models(), 3)


def test_reanalyse_adds_the_full_depth_check_and_pairs_same_round_intervals(tmp_path, capsys):
    """A saved result re-analysed: the full-depth predictor is checked over the mixes, the
    table shows the one-variant models as its calibration, and the same-round error
    intervals are recomputed paired by round from the saved timings."""
    from bench.latency import error_ci

    models = timed_models({",".join(PATTERNS[4]): 1.02})
    rows, table, same = saved(models)
    res = reanalysed(tmp_path, rows, table)
    full = res["predictor"]["torch-cpu"]["full_depth"]
    assert full["configs"] == 3 and full["worst_error"] == pytest.approx(1 - 1 / 1.02)
    assert not full["goal_met"]  # 3 mixes, fewer than the goal's 6
    for r, m in zip(res["rows"], models, strict=True):
        want = error_ci(same, m["attention"], m, paired=True)
        assert r["same_rounds_error_ci"] == pytest.approx(want) and want != [-1.0, 1.0]
    printed = capsys.readouterr().out
    assert printed.count("| calibration | - |") == 2
    assert "mixes from the one-variant whole models (full depth) worst error 2.0%" in printed
    assert "nothing re-timed" in res["reanalysed"]


def test_table_names_the_group_of_a_pattern_timed_in_several(tmp_path, capsys):
    """onnxruntime's one-variant models, timed beside every group's mixes: a row per
    group, named by its group; the full-depth check pairs each mix with its group's copies,
    and the predictor checks count each pattern once."""
    models = timed_models(groups=[0, 0, 1, 1, 1])
    models[2:2] = [{**models[0], "group": 1}, {**models[1], "group": 1}]  # again, in group 1
    rows, table, same = saved(models)
    table["models"]["groups"].append({"same_rounds_blocks": same})
    res = reanalysed(tmp_path, rows, table)
    printed = capsys.readouterr().out
    for p in PATTERNS[:2]:
        name = ",".join(p)
        assert f"| {name} (group 0) |" in printed and f"| {name} (group 1) |" in printed
    assert f"| {','.join(PATTERNS[2])} |" in printed  # timed once: no group named
    full = res["predictor"]["torch-cpu"]["full_depth"]
    assert full["configs"] == 3 and all(r["paired"] for r in full["rows"])
    same_rounds = res["predictor"]["torch-cpu"]["same_rounds"]
    assert same_rounds["configs"] == len(PATTERNS) and len(rows) == len(PATTERNS) + 2


def saved(models: list[dict]) -> tuple[list[dict], dict, dict]:
    """The rows, the table and the same-round stacks of a saved torch-cpu result of
    `models` (same-round intervals left unpaired, [-1, 1], for reanalyse to redo)."""
    same = {
        "variants": [
            {"variant": v, "median_ms": ms, "times_ms": [ms * m for m in (1.0, 1.1, 0.9)] * 3}
            for v, ms in BLOCK.items()
        ],
        "overhead": {"median_ms": OVERHEAD, "times_ms": [OVERHEAD] * 9},
    }
    rows = []
    for m in models:
        pred = OVERHEAD + sum(BLOCK[v] for v in m["attention"])
        m.update(same_rounds_predicted_ms=pred, same_rounds_error=pred / m["median_ms"] - 1,
                 same_rounds_error_ci=[-1.0, 1.0])  # fmt: skip
        rows.append(
            {
                "pattern": m["pattern"],
                "backend": "torch-cpu",
                "group": m["group"],
                "median_ms": m["median_ms"],
                "ci_low_ms": m["median_ms"],
                "ci_high_ms": m["median_ms"],
                "fraction_of_gemm": 0.5,
                "predicted_ms": pred,
                "prediction_error": pred / m["median_ms"] - 1,
                "same_rounds_predicted_ms": pred,
                "same_rounds_error": pred / m["median_ms"] - 1,
                "same_rounds_error_ci": [-1.0, 1.0],
            }
        )
    table = {
        "blocks": synthetic_table()["blocks"],
        "models": {"models": models, "groups": [{"same_rounds_blocks": same}]},
    }
    return rows, table, same


def test_bench_patterns_times_the_one_variant_models_beside_every_groups_mixes(monkeypatch):
    """End to end on onnxruntime (a 4-block tiny model): with room for two mixes beside
    the two one-variant models, three mixes make two groups, each with its own copies of those
    models, so every full-depth prediction is paired."""
    pytest.importorskip("onnxruntime")
    import bench.model_cpu as mc
    from hybrid_dit import PRESETS

    depth = DEPTH  # the tiny preset, deeper: three mixes
    monkeypatch.setitem(
        mc.PRESETS, "tiny-deep", PRESETS["tiny"].replace(depth=depth, attention="softmax")
    )
    mixes = [["softmax"] * k + ["relu_linear"] * (depth - k) for k in range(1, depth)]
    monkeypatch.setattr(mc, "held_group_size", lambda cfg: 4)
    monkeypatch.setattr(mc, "gemm_rate", lambda: 100.0)  # not what this test checks
    monkeypatch.setattr(mc, "ort_gemm_rate", lambda: 100.0)
    pats = [["softmax"] * depth, ["relu_linear"] * depth, *mixes]
    doc = mc.bench_patterns("tiny-deep", (2, 4, 4), pats, repeats=3, block_repeats=3,
                            backends=("onnxruntime-cpu",), progress=False,
                            log=lambda s: None, gemm_probe_n=32)  # fmt: skip
    rows = doc["rows"]
    for r in rows:  # each model against the GEMM timed in its own group's rounds
        group = doc["tables"]["onnxruntime-cpu"]["models"]["groups"][r["group"]]
        assert r["gemm_gflops_same_rounds"] == group["gemm"]["gflops"] and group["gemm"]["n"] == 32
        lo, hi = r["fraction_of_gemm_ci"]
        assert lo <= r["fraction_of_gemm"] <= hi
        assert r["fraction_of_gemm_before"] == pytest.approx(r["gflops"] / 100.0)
    groups = sorted({r["group"] for r in rows})
    assert groups == list(range(math.ceil(len(mixes) / 2)))
    for g in groups:
        mine = [r["pattern"] for r in rows if r["group"] == g]
        assert {format_pattern(p) for p in pats[:2]} <= set(mine) and len(mine) <= 4
    full = doc["predictor"]["onnxruntime-cpu"]["full_depth"]
    assert full["configs"] == len(mixes) and all(r["paired"] for r in full["rows"])
    assert doc["references_everywhere"]
