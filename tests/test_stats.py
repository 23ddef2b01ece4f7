"""bench.stats: intervals of medians and the words a report may use about two latencies."""

from __future__ import annotations

import numpy as np
import pytest

from bench.machine import Loaded, time_interleaved
from bench.stats import median_ci, separated, speed_verdict, summarize


def synthetic(median_ms: float, spread: float, n: int = 9, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return summarize((median_ms + spread * rng.standard_normal(n)) / 1e3)


def test_summary_holds_median_interval_and_raw_times():
    s = summarize([0.3, 0.1, 0.2, 0.5, 0.4])
    assert s["median"] == 0.3 and s["repeats"] == 5 and len(s["times"]) == 5
    assert s["ci_low"] <= s["median"] <= s["ci_high"]
    assert s["p10"] <= s["median"] <= s["p90"]
    assert summarize([0.3, 0.1])["ci_low"] == 0.1  # fewer than 3: the min-max range
    with pytest.raises(ValueError, match="times must be"):
        summarize([])
    with pytest.raises(ValueError, match="times must be"):
        summarize([0.1, float("nan")])


def test_median_interval_is_reproducible_and_shrinks_with_more_repeats():
    rng = np.random.default_rng(1)
    few, many = rng.normal(10, 1, 7), rng.normal(10, 1, 200)
    assert median_ci(few) == median_ci(few)  # seeded bootstrap
    lo7, hi7 = median_ci(few)
    lo200, hi200 = median_ci(many)
    assert hi200 - lo200 < hi7 - lo7


def test_faster_only_when_the_intervals_separate():
    a, b = synthetic(100.0, 1.0), synthetic(175.0, 1.0, seed=1)
    assert separated(a, b)
    verdict = speed_verdict(a, b, "chosen", "MobileI2V's pattern")
    assert verdict.startswith("chosen is 1.7") and "faster than MobileI2V's pattern" in verdict
    # the order of the arguments does not change who is faster
    assert speed_verdict(b, a, "MobileI2V's pattern", "chosen").startswith("chosen is 1.7")


def test_overlapping_intervals_read_same_within_noise():
    # the newcomer's case: 11367 vs 12599 ms medians of two configs of equal cost, each
    # with the spread a busy 2-core machine gives (2 s)
    a = summarize([9.4, 11.367, 13.4])
    b = summarize([10.6, 12.599, 14.6])
    assert not separated(a, b)
    v = speed_verdict(a, b, "chosen", "MobileI2V's pattern")
    assert "same within noise" in v and "faster" not in v
    assert "(medians 11367 and 12599 ms" in v  # whole-model times without exponents


def test_too_few_repeats_never_read_faster():
    one, other = summarize([0.010]), summarize([0.020])
    assert not separated(one, other)
    assert "fewer than 3 repeats" in speed_verdict(one, other, "a", "b")


def test_verdict_reads_table_rows_in_ms():
    row = {"median_ms": 10.0, "ci_low_ms": 9.0, "ci_high_ms": 11.0}
    other = {"median_ms": 20.0, "ci_low_ms": 19.0, "ci_high_ms": 21.0}
    assert speed_verdict(row, other, "a", "b").startswith("a is 2.00x faster than b")


def test_interleaved_timing_runs_candidates_in_rounds():
    order = []
    res = time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, repeats=3
    )
    # a warm-up round, then three timed rounds whose order rotates: A B, B A, A B
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert res["a"]["repeats"] == res["b"]["repeats"] == 3


def test_loaded_candidates_are_loaded_warmed_and_dropped_one_at_a_time():
    log, alive = [], set()

    class Session:
        def __init__(self, name):
            self.name = name
            assert not alive, f"{name} loaded while {alive} still held"
            alive.add(name)
            log.append(f"load {name}")

        def __call__(self):
            log.append(f"run {self.name}")

        def __del__(self):
            alive.discard(self.name)

    res = time_interleaved(
        {
            "a": Loaded(lambda: Session("a")),
            "b": Loaded(lambda: Session("b"), warm=2),
            "c": lambda: log.append("run c"),
        },
        warmup=1,
        repeats=2,
    )
    # the warm-up round runs only the plain candidate; each timed call of a Loaded one
    # is preceded by its load and `warm` untimed runs, and it is dropped right after
    assert log == [
        "run c",
        *["load a", "run a", "run a", "load b", "run b", "run b", "run b", "run c"],
        *["load b", "run b", "run b", "run b", "run c", "load a", "run a", "run a"],
    ]
    assert not alive
    assert all(res[k]["repeats"] == 2 for k in "abc")


def test_loaded_checks_its_arguments():
    with pytest.raises(ValueError, match="load must be callable"):
        Loaded(None)
    with pytest.raises(ValueError, match="warm must be an int >= 0, got -1"):
        Loaded(lambda: None, warm=-1)


@pytest.mark.parametrize("load_per_call", [False, True])
def test_onnxruntime_runners_are_warmed_past_the_slow_second_run(tmp_path, monkeypatch,
                                                                 load_per_call):  # fmt: skip
    """A new onnxruntime session's first two runs are not its steady state (the second is
    its slowest): bench.latency.make_runner runs every session it makes ORT_WARM_RUNS
    times before handing it out, held or made per timed call."""
    import torch

    import export.onnx as eo
    from bench.latency import ORT_WARM_RUNS, make_runner

    runs = []
    real_session = eo.session

    class Counting:
        def __init__(self, sess):
            self.sess = sess

        def run(self, *args):
            runs.append(1)
            return self.sess.run(*args)

    monkeypatch.setattr(eo, "session", lambda path, **kw: Counting(real_session(path, **kw)))
    module = torch.nn.Linear(4, 3)
    r = make_runner(module, (torch.randn(2, 4),), "onnxruntime-cpu", tmp_path, load_per_call)
    if load_per_call:
        assert isinstance(r, Loaded) and r.warm == 0 and not runs
        r = r.load()
    assert ORT_WARM_RUNS >= 2 and len(runs) == ORT_WARM_RUNS
    (out,) = r()
    assert len(runs) == ORT_WARM_RUNS + 1 and out.shape == (2, 3)


def test_rank_correlation_needs_three_pairs_and_variation():
    """Two pairs always rank +-1, which the report would print as perfect agreement."""
    from bench.stats import MIN_RANKED, rank_correlation

    assert MIN_RANKED == 3
    assert rank_correlation([1.0, 2.0], [2.0, 1.0]) is None
    assert rank_correlation([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]) is None
    assert rank_correlation([1.0, 2.0, 3.0], [10.0, 30.0, 20.0]) == pytest.approx(0.5)


def test_prediction_error_interval_carries_both_sides_noise():
    from bench.stats import prediction_error_ci

    # no noise: the interval is the exact error, predicted = 10 + 2 x 45 = 100 vs 80
    exact = prediction_error_ci([(1, [10.0] * 5), (2, [45.0] * 5)], [80.0] * 7)
    assert exact == pytest.approx((0.25, 0.25))
    rng = np.random.default_rng(0)
    block = 45 * (1 + 0.1 * rng.standard_normal(9))
    model = 100 * (1 + 0.1 * rng.standard_normal(9))
    lo, hi = prediction_error_ci([(1, [10.0] * 9), (2, block)], model)
    point = (10 + 2 * np.median(block)) / np.median(model) - 1
    assert lo < point < hi and hi - lo > 0.05  # 10% noise per call: no 5% claim from 9
    # noise on one side only gives a narrower interval than on both
    lo1, hi1 = prediction_error_ci([(1, [10.0] * 9), (2, [45.0] * 9)], model)
    assert hi1 - lo1 < hi - lo
    # fewer than 3 repeats: taken as the median, not resampled
    assert prediction_error_ci([(1, [50.0, 50.0])], [40.0] * 2) == pytest.approx((0.25, 0.25))
    with pytest.raises(ValueError, match="finite"):
        prediction_error_ci([(1, [1.0, float("nan"), 1.0])], [1.0] * 3)


def test_paired_error_interval_resamples_whole_rounds():
    """Drift that moves every candidate of a round alike (a shared machine's) widens the
    unpaired interval but cancels in the paired one; a pairing of unequal rounds is an
    error, and fewer than 3 rounds give the point."""
    from bench.stats import prediction_error_ci

    rng = np.random.default_rng(1)
    drift = np.exp(0.3 * rng.standard_normal(15))  # +-30% from round to round
    jitter = lambda: 1 + 0.01 * rng.standard_normal(15)  # noqa: E731
    overhead, block, model = 10 * drift * jitter(), 45 * drift * jitter(), 80 * drift * jitter()
    parts = [(1, overhead), (2, block)]
    lo_u, hi_u = prediction_error_ci(parts, model)
    lo_p, hi_p = prediction_error_ci(parts, model, paired=True)
    assert lo_p < 0.25 < hi_p and hi_p - lo_p < 0.05  # the true error, +25%, within 1%-noise
    assert lo_u < 0.25 < hi_u and hi_u - lo_u > 4 * (hi_p - lo_p)
    with pytest.raises(ValueError, match=r"paired: .* got \[15, 14, 15\] times"):
        prediction_error_ci([(1, overhead), (2, block[:-1])], model, paired=True)
    two = prediction_error_ci([(1, [50.0, 50.0])], [40.0, 40.0], paired=True)
    assert two == pytest.approx((0.25, 0.25))


def test_error_text_shows_the_interval_where_there_is_one():
    from bench.stats import error_text

    assert error_text(None) == "n/a"
    assert error_text(0.031) == "+3.1%"
    assert error_text(-0.02, [-0.084, 0.04]) == "-2.0% [-8.4, +4.0]"


def test_paired_ratio_cancels_drift_that_moves_both_sides_alike():
    """Round r's ratio is scale x num[r] / den[r]: a machine twice as fast in later rounds
    leaves every ratio, so the median and its interval, where they were."""
    from bench.stats import paired_ratio

    den = [1.0, 1.0, 0.5, 0.5, 0.5]
    num = [3 * d for d in den]
    r = paired_ratio(num, den, scale=2.0)
    assert r["median"] == pytest.approx(6.0)
    assert r["ci_low"] == pytest.approx(6.0) and r["ci_high"] == pytest.approx(6.0)
    assert r["repeats"] == 5
    # the interval of the ratio of medians resampled apart spans the drift instead
    ra = median_ci(num)
    rb = median_ci(den)
    assert 2 * ra[1] / rb[0] > 2 * 6.0 - 1e-9
    for num, den, msg in (
        ([1.0, 2.0], [1.0], "one time per round"),
        ([], [], "one time per round"),
        ([1.0], [0.0], "den > 0"),
        ([float("nan")], [1.0], "finite"),
    ):
        with pytest.raises(ValueError, match=msg):
            paired_ratio(num, den)
