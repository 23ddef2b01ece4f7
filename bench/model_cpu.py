"""Whole-model CPU benchmark of the hybrid DiT: one denoising step of a preset at a token
grid on torch-cpu and onnxruntime-cpu for a few attention patterns, with the achieved
fraction of the fp32 GEMM rate measured in the same run, and the block-table predictions
next to each whole model.

    python -m bench.model_cpu                      # mobilei2v, 3 x 23 x 40, eight patterns
    python -m bench.model_cpu --repeats 5 --patterns "softmax;L*7,S,L*7,S" --out x.json

Both backends run what a user would ship, configured alike: the zoo's fast exact paths
(`impl="auto"`), torch with its thread count, onnxruntime through export.onnx.session
(the same intra-op threads, inter-op 1, spinning off). The patterns of a backend are timed
interleaved (bench.latency.model_table: A B C A B C ...), every row with the 95% bootstrap
interval of its median. FLOPs are analytic (`hybrid_dit.model_flops`: linear and conv
layers plus the zoo's attention counts); elementwise work is not counted, so the fraction
is a lower bound on how busy the GEMM units are; each backend's fraction is quoted
against its own matmul rate (torch's MKL, onnxruntime's MLAS), measured before, and
torch's after, with the load average, so a disturbed run shows.

Two block-sum predictions stand next to each whole model (overhead + the sum of its
blocks' latencies, each block timed in a stack of `--stack`):
- "table": the block table timed before the whole models, as the study's latency stage
  times it (what its search trades against);
- "same rounds": the same stacks timed again in the whole models' own interleaved rounds
  (bench.latency.model_table's same_rounds), so that the machine's drift between two
  measurements (on a 2-core cloud VM the fp32 GEMM rate wanders by +-20% over seconds to
  minutes) does not count as the predictor's error; its interval resamples whole rounds.
A third, the full-depth predictor, times blocks inside full-depth models: each mix from
the one-variant whole models timed in the same rounds (bench.latency.full_depth_predictions;
every block of a variant costs what it costs in its all-that-variant model), checked over
the mixes (paired by round where the mix and those models share their rounds). Every
error carries a bootstrap interval from the repeats of both sides, and every predictor its
goal check (worst error <= 5%, Spearman >= 0.95 over >= 6 models).
On onnxruntime, whole-model sessions are timed in groups of as many as fit in memory side
by side (bench.latency.held_group_size), patterns of neighbouring predicted latency in one
group, each group with its own same-round stacks and the one-variant models timed again
beside its mixes (so every full-depth prediction is paired, and those models have a row
per group; `--references-once` times them once: shorter, but unpaired); on torch all
patterns are one group and every block is also timed inside the whole models' own calls
(BlockClock), so what a block costs inside a full-depth model stands beside what its stack
measures.

It also reports a held-out check of predictors calibrated on whole models (leave one
out). Writes bench/results/model-cpu.json atomically; `--reanalyse FILE` recomputes the
analysis from a saved result, timing nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from bench.latency import (
    STACK,
    block_table,
    error_ci,
    full_depth_predictions,
    held_group_size,
    model_table,
    predict_ms,
    scaled_leave_one_out,
)
from bench.machine import GEMM_PROBE_N, gemm_rate, machine_info, ort_gemm_rate
from bench.stats import error_text, gemm_cell, rank_correlation, relative_error
from hybrid_dit import PRESETS, format_pattern, model_flops, parse_grid, reference_patterns

RESULTS = Path(__file__).resolve().parent / "results" / "model-cpu.json"
BACKENDS = ("torch-cpu", "onnxruntime-cpu")
# Beside all softmax, MobileI2V's 7:1 and all relu_linear, five more mixes, so that the
# predictors are checked on eight whole models of 0, 1, 2, 4, 8, 9, 12 and 16 softmax
# blocks: six mixes for the full-depth predictor, which calibrates on the two others. The
# 9-softmax one is the pattern the study chose for its first teacher
# (bench/results/study-cpu).
MORE_PATTERNS = (
    "L*3,S,L*3,S,L*3,S,L*3,S", "S*8,L*8", "L*15,S", "S*6,L*4,S*6", "S*2,L*3,S*6,L*4,S"
)  # fmt: skip
# The predictor goal of the latency issue: every model within this relative error, and
# this rank correlation, over at least this many models.
GOAL_ERROR, GOAL_SPEARMAN, GOAL_CONFIGS = 0.05, 0.95, 6
ROW_KEYS = ("median_ms", "ci_low_ms", "ci_high_ms", "p10_ms", "p90_ms", "repeats", "times_ms")
PREDICTION_KEYS = (
    "predicted_ms",
    "prediction_error",
    "prediction_error_ci",
    "same_rounds_predicted_ms",
    "same_rounds_error",
    "same_rounds_error_ci",
    "in_model",
)


def groups_of(
    cfg, patterns, backend: str, blocks: dict, references_everywhere: bool = True
) -> list[list]:
    """The patterns split into groups that are timed together: one group on torch; on
    onnxruntime as many whole models per group as fit in memory side by side, patterns
    sorted by their block-table prediction so that near neighbours (the pairs a rank
    correlation can get wrong) share their rounds.

    `references_everywhere`: the one-variant patterns (the full-depth predictor's
    calibration) are timed in every onnxruntime group, beside that group's mixes, so each
    mix's full-depth prediction pairs with references from its own rounds; needs room for
    the references and at least one mix per group, else groups are made without it."""
    if backend != "onnxruntime-cpu":
        return [list(patterns)]
    size = held_group_size(cfg)

    def cost(p):
        return predict_ms(blocks, cfg.with_attention(p).attention)

    order = sorted(patterns, key=cost)
    refs = [p for p in order if len(set(cfg.with_attention(p).attention)) == 1]
    mixes = [p for p in order if p not in refs]
    room = size - len(refs)
    if references_everywhere and refs and mixes and room >= 1 and len(order) > size:
        return [sorted(refs + mixes[i : i + room], key=cost) for i in range(0, len(mixes), room)]
    return [order[i : i + size] for i in range(0, len(order), size)]


def bench_patterns(
    preset: str = "mobilei2v",
    grid=(3, 23, 40),
    patterns=None,
    repeats: int = 5,
    block_repeats: int = 7,
    backends=BACKENDS,
    progress: bool = True,
    log=print,
    stack: int = STACK,
    references_everywhere: bool = True,
    gemm_probe_n: int = GEMM_PROBE_N,
) -> dict:
    """Times one step per pattern and backend (interleaved per backend and group), with the
    block table of each backend timed first and the block stacks again in the models'
    rounds; on onnxruntime the one-variant models in every group (groups_of); an
    (n x n) GEMM through the backend's matmul in every group's rounds, the scale of each
    model's fraction of GEMM (rates measured once before the run are kept beside, as
    "fraction_of_gemm_before"). Returns a JSON-able dict."""
    cfg = PRESETS[preset]
    if patterns is None:
        patterns = [*reference_patterns(cfg.depth), *(p for p in MORE_PATTERNS if cfg.depth == 16)]
    patterns = list(patterns)
    variants = sorted({v for p in patterns for v in cfg.with_attention(p).attention})
    load_before = os.getloadavg()
    gemm_before = gemm_rate()
    log(f"fp32 GEMM rate (2048^3, torch): {gemm_before:.1f} GFLOP/s")
    # each backend's fraction of GEMM is quoted against its own matmul kernels' rate
    gemm_of = {"torch-cpu": gemm_before}
    if "onnxruntime-cpu" in backends:
        gemm_of["onnxruntime-cpu"] = ort_gemm_rate()
        log(f"fp32 GEMM rate (2048^3, onnxruntime): {gemm_of['onnxruntime-cpu']:.1f} GFLOP/s")
    rows, tables = [], {}
    for backend in backends:
        blocks = block_table(
            cfg, grid, backend, variants, repeats=block_repeats, stack=stack, progress=progress
        )
        groups = []
        for i, group in enumerate(groups_of(cfg, patterns, backend, blocks, references_everywhere)):
            kinds = sorted({v for p in group for v in cfg.with_attention(p).attention})
            t = model_table(
                cfg, grid, backend, group, blocks=blocks, repeats=repeats, progress=progress,
                same_rounds=kinds, stack=stack, block_clock=backend == "torch-cpu",
                gemm_probe_n=gemm_probe_n,
            )  # fmt: skip
            for m in t["models"]:
                m["group"] = i
            groups.append(t)
        models = [m for t in groups for m in t["models"]]
        tables[backend] = {
            "blocks": blocks,
            "models": {"models": models, "groups": [
                {k: v for k, v in t.items() if k != "models"} for t in groups
            ]},
        }  # fmt: skip
        for m in models:
            flops = model_flops(cfg.with_attention(m["attention"]), grid)
            row = {
                "pattern": m["pattern"],
                "backend": backend,
                "group": m["group"],
                **{k: m[k] for k in ROW_KEYS},
                "flops": flops,
                "gflops": m["gflops"],
                "fraction_of_gemm": m["fraction_of_gemm"],
                "fraction_of_gemm_ci": m["fraction_of_gemm_ci"],
                "gemm_gflops_same_rounds": groups[m["group"]]["gemm"]["gflops"],
                "fraction_of_gemm_before": m["gflops"] / gemm_of[backend],
                **{k: m[k] for k in PREDICTION_KEYS if k in m},
            }
            rows.append(row)
            log(
                f"{m['pattern']} {backend}: {m['median_ms'] / 1e3:.3f} s/step "
                f"[{m['ci_low_ms'] / 1e3:.3f}, {m['ci_high_ms'] / 1e3:.3f}], "
                f"{m['gflops']:.1f} GFLOP/s = {100 * row['fraction_of_gemm']:.0f}% of the GEMM "
                f"rate of its rounds ({row['gemm_gflops_same_rounds']:.1f} GFLOP/s); "
                f"predicted {m['same_rounds_predicted_ms'] / 1e3:.3f} s "
                f"({100 * m['same_rounds_error']:+.1f}%) from same-round stacks, "
                f"{m['predicted_ms'] / 1e3:.3f} s ({100 * m['prediction_error']:+.1f}%) from "
                "the table"
            )
    gemm_after = gemm_rate()
    log(f"fp32 GEMM rate after: {gemm_after:.1f} GFLOP/s")
    doc = {
        "benchmark": "bench.model_cpu",
        "preset": preset,
        "config": cfg.to_dict(),
        "grid": list(grid),
        "tokens": math.prod(grid),
        "stack": stack,
        "references_everywhere": references_everywhere,
        "patterns": [format_pattern(cfg.with_attention(p).attention) for p in patterns],
        "machine": machine_info(),
        "gemm_gflops": gemm_before,
        "gemm_gflops_after": gemm_after,
        "gemm_gflops_by_backend": gemm_of,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "rows": rows,
        "tables": tables,
    }
    doc["predictor"] = predictor_summary(rows, tables, cfg.depth)
    for backend, pr in doc["predictor"].items():
        log(predictor_line(backend, pr))
    return doc


def predictor_check(rows: list[dict], predicted: str, error: str, ci: str | None = None) -> dict:
    """Worst error, Spearman and the goal check of one predictor over the rows that have
    it (every timed copy of a pattern counts towards the worst error and the ranking, once
    towards the number of configs); with `ci`, whether every error's interval lies within
    the goal too."""
    mine = [r for r in rows if r.get(predicted) is not None]
    out = {
        # distinct patterns: one timed in several groups counts once, every copy checked
        "configs": len({r.get("pattern", i) for i, r in enumerate(mine)}),
        "worst_error": max((abs(r[error]) for r in mine), default=None),
        "spearman": rank_correlation([r[predicted] for r in mine], [r["median_ms"] for r in mine]),
    }
    out["goal_met"] = (
        out["configs"] >= GOAL_CONFIGS
        and out["worst_error"] <= GOAL_ERROR
        and out["spearman"] is not None
        and out["spearman"] >= GOAL_SPEARMAN
    )
    if ci is not None:
        cis = [r.get(ci) for r in mine]
        out["intervals_within_goal"] = bool(cis) and all(
            c is not None and -GOAL_ERROR <= c[0] and c[1] <= GOAL_ERROR for c in cis
        )
    return out


def predictor_summary(rows: list[dict], tables: dict, depth: int) -> dict:
    """Per backend: the same-round block-sum predictor and the table's, each with its
    worst error, Spearman and goal check over the models; the full-depth predictor's
    (bench.latency.full_depth_predictions: the mixes from the one-variant whole models
    timed beside them), checked over the mixes; the in-model vs stack
    latency of each variant (in_model_blocks, and block_clock's blocks inside the whole
    models where timed) and the held-out checks of predictors calibrated on whole models
    (leave_one_out, scaled_leave_one_out). Derived from the measured rows and tables only,
    so `--reanalyse` recomputes it from a saved result."""
    out = {}
    for backend, t in tables.items():
        mine = [r for r in rows if r["backend"] == backend]
        out[backend] = {
            "same_rounds": predictor_check(
                mine, "same_rounds_predicted_ms", "same_rounds_error", "same_rounds_error_ci"
            ),
            "table": predictor_check(
                mine, "predicted_ms", "prediction_error", "prediction_error_ci"
            ),
            "full_depth": full_depth_check(t["models"]["models"], depth),
            "in_model_block": in_model_blocks(t, depth),
            "block_clock": block_clock_summary(t),
            "leave_one_out": leave_one_out(t),
            "scaled_leave_one_out": scaled_leave_one_out(t),
        }
    return out


def full_depth_check(models: list[dict], depth: int) -> dict:
    """full_depth_predictions of a backend's models with predictor_check's verdict over
    them (the one-variant models are its calibration, so they are not counted); where every
    row is paired, "per_round": the same check on each row's median per-round error (a
    diagnostic of what drift between rounds adds; the goal is judged on "error")."""
    rows = full_depth_predictions(models, depth)
    out = {
        "what": "mixes predicted from the one-variant whole models: sum over variants of "
        "(its blocks / depth) x that model's latency (blocks timed inside full-depth models)",
        "rows": rows,
        **predictor_check(rows, "predicted_ms", "error", "error_ci"),
    }
    if rows and all("error_per_round" in r for r in rows):
        check = predictor_check(rows, "predicted_ms", "error_per_round", "error_per_round_ci")
        out["per_round"] = {
            k: check[k] for k in ("configs", "worst_error", "intervals_within_goal")
        }
    return out


def same_round_intervals(rows: list[dict], tables: dict) -> None:
    """Recomputes every row's same-round error interval from the saved timings, paired by
    round (bench.latency.error_ci), in place: results saved before the intervals were
    paired carry unpaired ones."""
    for r in rows:
        t = tables.get(r["backend"])
        if t is None or r.get("same_rounds_error") is None:
            continue
        groups = t["models"].get("groups", [])
        same = groups[r["group"]].get("same_rounds_blocks") if "group" in r else None
        m = next(
            (m for m in t["models"]["models"]
             if m["pattern"] == r["pattern"] and m.get("group") == r.get("group")),
            None,
        )  # fmt: skip
        if same is None or m is None:
            continue
        r["same_rounds_error_ci"] = m["same_rounds_error_ci"] = error_ci(
            same, m["attention"], m, paired=True
        )


def block_clock_summary(table: dict) -> list[dict]:
    """Per model timed with block_clock: each variant's latency inside the whole model
    beside its same-round stack's (per block), and the rest of the step beside the
    same-round overhead."""
    groups = table["models"].get("groups", [])
    out = []
    for m in table["models"]["models"]:
        inside = m.get("in_model")
        same = groups[m["group"]].get("same_rounds_blocks") if "group" in m else None
        if inside is None or same is None:
            continue
        per = {r["variant"]: r["median_ms"] for r in same["variants"]}
        blocks = {
            v: {"in_model_ms": b["median_ms"], "stack_ms": per[v], "ratio": b["median_ms"] / per[v]}
            for v, b in inside["blocks"].items()
        }
        out.append(
            {
                "pattern": m["pattern"],
                "blocks": blocks,
                "rest_ms": inside["rest"]["median_ms"],
                "overhead_ms": same["overhead"]["median_ms"],
            }
        )
    return out


def in_model_blocks(table: dict, depth: int) -> list[dict]:
    """What the block sum misses, per variant: a block's latency inside a whole model of
    that variant alone ((model - overhead) / depth) beside the block table's (a stack)."""
    overhead = table["blocks"]["overhead"]["median_ms"]
    per = {r["variant"]: r["median_ms"] for r in table["blocks"]["variants"]}
    out = []
    for m in table["models"]["models"]:
        kinds = set(m["attention"])
        if len(kinds) == 1:
            (v,) = kinds
            inside = (m["median_ms"] - overhead) / depth
            out.append({"variant": v, "table_ms": per[v], "in_model_ms": inside,
                        "ratio": inside / per[v]})  # fmt: skip
    return out


def leave_one_out(table: dict) -> dict:
    """What a predictor calibrated on whole models would achieve, checked honestly: for each
    model, per-variant in-model block latencies are fitted by least squares to the *other*
    whole models (model - overhead = sum over blocks), and that model is predicted from
    them. Models with a variant the others lack are left out. Returns the fit on all
    models, each model's held-out prediction and the worst error."""
    overhead = table["blocks"]["overhead"]["median_ms"]
    models = table["models"]["models"]
    names = sorted({v for m in models for v in m["attention"]})
    a = np.array([[m["attention"].count(v) for v in names] for m in models], dtype=float)
    y = np.array([m["median_ms"] - overhead for m in models])
    rows = []
    for i, m in enumerate(models):
        # held out with every copy of its pattern (one pattern timed in several groups)
        keep = np.array([o["pattern"] != m["pattern"] for o in models])
        if np.linalg.matrix_rank(a[keep]) < len(names):
            continue
        fit = np.linalg.lstsq(a[keep], y[keep], rcond=None)[0]
        pred = overhead + float(a[i] @ fit)
        rows.append({"pattern": m["pattern"], "predicted_ms": pred,
                     "error": relative_error(pred, m["median_ms"])})  # fmt: skip
    fit_all = np.linalg.lstsq(a, y, rcond=None)[0]
    meas = [m["median_ms"] for m in models if any(r["pattern"] == m["pattern"] for r in rows)]
    pred = [r["predicted_ms"] for r in rows]
    return {
        "what": "per-variant block latencies fitted to the other whole models (least squares)",
        "fitted_block_ms": dict(zip(names, map(float, fit_all), strict=True)),
        "rows": rows,
        "configs": len({r["pattern"] for r in rows}),
        "worst_error": max((abs(r["error"]) for r in rows), default=None),
        "spearman": rank_correlation(pred, meas),
    }


def table(doc: dict) -> str:
    lines = [
        f"{doc['preset']} at grid {'x'.join(map(str, doc['grid']))} ({doc['tokens']} tokens); "
        f"fp32 GEMM {doc['gemm_gflops']:.1f} GFLOP/s torch (after: "
        f"{doc['gemm_gflops_after']:.1f}); GEMM by backend "
        + ", ".join(f"{k} {v:.1f}" for k, v in doc["gemm_gflops_by_backend"].items())
        + " before the run; 'of GEMM': per-round achieved rate over the GEMM rate of the same "
        "round through the backend's own matmul, median [95% CI]; load average "
        f"{doc['load_average_before'][0]:.2f} -> {doc['load_average_after'][0]:.2f}; blocks "
        f"timed in stacks of {doc.get('stack', STACK)}",
        "| pattern | backend | s / step, median [95% CI] | of GEMM | predicted s, same rounds "
        "| error [95% CI] | predicted s, table | error [95% CI] | predicted s, full depth "
        "| error [95% CI] |",
        "|---|---|---|---:|---:|---|---:|---|---:|---|",
    ]
    full = {
        (backend, f["pattern"]): f
        for backend, pr in doc["predictor"].items()
        for f in (pr.get("full_depth") or {}).get("rows", [])
    }
    one_variant = {
        (backend, m["pattern"])
        for backend, t in doc["tables"].items()
        for m in t["models"]["models"]
        if len(set(m["attention"])) == 1
    }
    copies = Counter((r["backend"], r["pattern"]) for r in doc["rows"])
    for r in doc["rows"]:
        same = r.get("same_rounds_predicted_ms")
        name = r["pattern"] + (
            f" (group {r['group']})" if copies[r["backend"], r["pattern"]] > 1 else ""
        )
        f = full.get((r["backend"], r["pattern"]))
        if f is not None:
            depth_cells = (
                f"{f['predicted_ms'] / 1e3:.2f} | {error_text(f['error'], f['error_ci'])}"
                + ("" if f["paired"] else " (unpaired)")
            )
        elif (r["backend"], r["pattern"]) in one_variant:
            depth_cells = "calibration | -"
        else:
            depth_cells = "n/a | n/a"
        lines.append(
            f"| {name} | {r['backend']} | {r['median_ms'] / 1e3:.2f} "
            f"[{r['ci_low_ms'] / 1e3:.2f}, {r['ci_high_ms'] / 1e3:.2f}] | "
            f"{gemm_cell(r)} | "
            f"{'n/a' if same is None else f'{same / 1e3:.2f}'} | "
            f"{error_text(r.get('same_rounds_error'), r.get('same_rounds_error_ci'))} | "
            f"{r['predicted_ms'] / 1e3:.2f} | "
            f"{error_text(r['prediction_error'], r.get('prediction_error_ci'))} | {depth_cells} |"
        )
    for backend, pr in doc["predictor"].items():
        lines.append(predictor_line(backend, pr))
    return "\n".join(lines)


def check_words(c: dict) -> str:
    words = (
        f"worst error {fmt(c.get('worst_error'), 100, '%')}, Spearman {fmt(c.get('spearman'))} "
        f"over {c.get('configs', 0)} models"
    )
    if "goal_met" in c:
        words += " (goal " + ("met" if c["goal_met"] else "not met")
        if "intervals_within_goal" in c:
            words += (
                "; every error's interval within the goal"
                if c["intervals_within_goal"]
                else "; not every error's interval within the goal"
            )
        words += ")"
    return words


def predictor_line(backend: str, pr: dict) -> str:
    """One paragraph of a backend's predictor analysis."""
    inside = ", ".join(f"{b['variant']} x{b['ratio']:.3f}" for b in pr.get("in_model_block", []))
    clock = "; ".join(
        f"{c['pattern']}: "
        + ", ".join(
            f"{v} {b['in_model_ms']:.4g} vs {b['stack_ms']:.4g} ms" for v, b in c["blocks"].items()
        )
        + f", rest {c['rest_ms']:.4g} vs overhead {c['overhead_ms']:.4g} ms"
        for c in pr.get("block_clock", [])
    )
    loo = pr.get("leave_one_out") or {}
    scaled = pr.get("scaled_leave_one_out") or {}
    parts = [
        f"{backend}: same-round block sum {check_words(pr.get('same_rounds', {}))}",
        f"block table timed before {check_words(pr.get('table', {}))}",
        f"mixes from the one-variant whole models (full depth) "
        f"{check_words(pr.get('full_depth', {}))}",
        *(
            [
                "the same, each mix's median per-round error (diagnostic, no goal verdict): "
                f"worst {fmt(per['worst_error'], 100, '%')} over {per['configs']} models, "
                + ("every" if per["intervals_within_goal"] else "not every")
                + f" interval within {100 * GOAL_ERROR:.0f}%"
            ]
            if (per := pr.get("full_depth", {}).get("per_round"))
            else []
        ),
        f"a block inside a one-variant model vs the table: {inside or 'no one-variant model'}",
    ]
    if clock:
        parts.append(f"blocks timed inside the whole models vs their same-round stacks: {clock}")
    parts += [
        f"per-variant latencies calibrated on the other models (leave one out): "
        f"{check_words({k: loo.get(k) for k in ('worst_error', 'spearman', 'configs')})}",
        f"block table x one in-model factor {fmt(scaled.get('factor'))} (leave one out): "
        f"{check_words({k: scaled.get(k) for k in ('worst_error', 'spearman', 'configs')})}",
    ]
    return "; ".join(parts)


def fmt(x, scale: float = 1.0, unit: str = "") -> str:
    return "n/a" if x is None else f"{scale * x:.{1 if unit else 3}f}{unit}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.model_cpu", description=__doc__.split("\n")[0]
    )
    p.add_argument("--preset", default="mobilei2v", choices=tuple(PRESETS))
    p.add_argument("--grid", default="3x23x40", help="token grid TxHxW")
    p.add_argument(
        "--patterns",
        default=None,
        help="attention patterns separated by ';' (default: all softmax, MobileI2V's 7:1, "
        "all relu_linear and five more mixes)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="interleaved rounds of whole models (default 20: a median's 95%% interval was "
        "still +-5-15%% on a 2-core cloud VM)",
    )
    p.add_argument("--block-repeats", type=int, default=9, help="rounds of the block tables")
    p.add_argument(
        "--stack", type=int, default=STACK, help="blocks per timed stack (per block = stack / it)"
    )
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--references-once",
        action="store_true",
        help="on onnxruntime, time the one-variant models in one group only, not beside "
        "every group's mixes (shorter, but the full-depth predictions of the other groups "
        "are then unpaired)",
    )
    p.add_argument(
        "--reanalyse",
        type=Path,
        default=None,
        metavar="JSON",
        help="time nothing: recompute the predictor analysis of a saved result and write it "
        "to --out",
    )
    args = p.parse_args(argv)
    from bench.machine import keep_freed_memory

    keep_freed_memory()  # the allocator every timing of ours runs with
    from export.files import write_json

    if args.reanalyse is not None:
        if not args.reanalyse.is_file():
            p.error(f"--reanalyse: no such file {str(args.reanalyse)!r}")
        doc = json.loads(args.reanalyse.read_text())
        if doc.get("benchmark") != "bench.model_cpu":
            p.error(f"--reanalyse: {args.reanalyse} is not a bench.model_cpu result")
        same_round_intervals(doc["rows"], doc["tables"])
        doc["predictor"] = predictor_summary(doc["rows"], doc["tables"], doc["config"]["depth"])
        doc["reanalysed"] = (
            "the predictor analysis and the same-round error intervals recomputed from the "
            "saved timings by `python -m bench.model_cpu --reanalyse`; nothing re-timed"
        )
        write_json(args.out, doc)
        print(table(doc))
        print(f"wrote {args.out}")
        return 0
    backends = tuple(b.strip() for b in args.backends.split(","))
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        p.error(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    for name in ("repeats", "block_repeats", "stack"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        grid = parse_grid(args.grid, "--grid")
        patterns = None
        if args.patterns is not None:
            patterns = [
                PRESETS[args.preset].with_attention(s).attention for s in args.patterns.split(";")
            ]
    except ValueError as e:
        p.error(str(e))
    if args.stack > PRESETS[args.preset].depth:
        p.error(f"--stack must be <= the preset's depth {PRESETS[args.preset].depth}")
    doc = bench_patterns(
        args.preset, grid, patterns, args.repeats, args.block_repeats, backends,
        progress=not args.no_progress, stack=args.stack,
        references_everywhere=not args.references_once,
    )  # fmt: skip
    write_json(args.out, doc)
    print(table(doc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
