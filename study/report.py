"""report.md and its plots, from the study's tables (every number here is read from the
JSON tables the stages wrote; nothing is measured here)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from bench.stats import MIN_RANKED, error_text, gemm_cell, speed_verdict
from export.files import write_text
from export.onnx import ATTENTION_WORDS
from study import plots
from study.evaluate import mse_to_psnr
from study.tables import markdown_table


def _pattern(names) -> str:
    from hybrid_dit import format_pattern

    return format_pattern(tuple(names))


def _f(x, fmt=".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _star(row) -> str:
    return "*" if row.get("cached") else ""


def _ci(row, fmt=".1f") -> str:
    return f"{row['median_ms']:{fmt}} [{row['ci_low_ms']:{fmt}}, {row['ci_high_ms']:{fmt}}]"


def write_report(study) -> Path:
    t, out, cfg = study.tables, Path(study.out), study.cfg
    (out / "plots").mkdir(parents=True, exist_ok=True)
    md: list[str] = ["# mobileattn study report", ""]
    zoo = t.get("zoo_cpu")
    machine = (zoo or t.get("latency", {})).get("machine", {})
    md += [
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} in `{out}`.",
        "",
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('usable_cores', '?')} usable cores, "
        f"torch {machine.get('torch', '?')} with {machine.get('torch_threads', '?')} threads; "
        f"1-minute load average at the start: {_f(machine.get('load_average_1min'))}.",
    ]
    if zoo:
        md.append(
            f"- Roofline scales, measured with the zoo timings they scale: fp32 GEMM "
            f"{zoo['gemm']['gflops']:.1f} GFLOP/s (torch matmul {zoo['gemm']['n']}^3, median "
            f"of {zoo['gemm']['repeats']}), copy bandwidth {zoo['copy_gbps']:.1f} GB/s."
        )
    md.append(
        f"- Measurements: {len(study.cache.misses)} measured now, {len(study.cache.hits)} "
        "reused from the per-machine cache (rows marked `*`; a cache entry is keyed by "
        "everything it depends on, the hash of the code that computes it included; "
        "`mobileattn run --fresh` measures everything)."
    )
    md.append(
        "- Latencies: medians of interleaved rounds (every candidate once per round, the "
        "order rotating, so drift hits all alike), `[a, b]` the 95% bootstrap interval of "
        "the median. A claim "
        "that one is faster than another is made only when those intervals separate; "
        "otherwise the report says they are the same within noise."
    )
    left_out = cfg.left_out()
    if left_out:
        md += ["", "This run leaves out (`mobileattn run --full` runs the whole sweep):"]
        md += [f"- {n}" for n in left_out]
    md.append("")
    sections = [
        ("zoo_cpu", lambda: _zoo_section(t["zoo_cpu"], out)),
        ("latency", lambda: _latency_section(t["latency"])),
        ("quality", lambda: _teachers_section(t["quality"])),
        ("quality", lambda: _quality_section(t["quality"])),
        ("search", lambda: _search_section(t["search"], t.get("validate"), out)),
        ("validate", lambda: _validate_section(t["validate"], cfg)),
        ("validate", lambda: _robustness_section(t["validate"])),
    ]
    for name, fn in sections:
        if name in t:
            md += fn()
    md += _native_section()
    if getattr(study, "samples", None):
        plots.image_grid(
            study.samples,
            out / "plots" / "samples.png",
            title="Held-out clips: the truth and what each model samples from the same noise",
        )
        md += [
            "## 9. What the numbers mean: samples",
            "",
            "Four held-out clips (frame 0 is the given image; frames 1..3 are generated), the "
            "truth on top, then each teacher at 20 Euler steps, then teacher 0's chosen pair "
            "and MobileI2V's recipe, both built for real.",
            "",
            "![samples](plots/samples.png)",
            "",
        ]
    if "export" in t:
        md += _export_section(t["export"], out)
    md += ["## Stage times", ""]
    md.append(
        markdown_table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in study.timings.items()])
    )
    md.append("")
    return write_text(out / "report.md", "\n".join(md))


# -- 1. zoo -------------------------------------------------------------------------------------


def _zoo_section(zoo, out) -> list[str]:
    rows = zoo["rows"]
    ns = sorted({r["N"] for r in rows})
    last = ns[-1]
    head = ["variant", "implementation", *[f"N={n} ms" for n in ns], f"N={last} x GEMM floor"]
    body = []
    keys = list(dict.fromkeys((r["variant"], r["impl"]) for r in rows))
    by = {(r["variant"], r["impl"], r["N"]): r for r in rows}
    for v, impl in keys:
        cells = []
        for n in ns:
            r = by.get((v, impl, n))
            cells.append(f"{_ci(r, '.2f')}{_star(r)}" if r else "-")
        r = by.get((v, impl, last))
        name = impl + (" (peer)" if r and r["peer"] else "")
        body.append([v, name, *cells, f"{r['of_gemm_floor']:.2f}x" if r else "-"])
    plots.latency_vs_n(
        rows,
        zoo["gemm"]["gflops"],
        zoo.get("copy_gbps"),
        out / "plots" / "latency_vs_n.png",
        title="Zoo fast paths on this CPU (fp32, B=1, H=16, D=72)",
    )
    verdicts = []
    for v, impl in keys:
        if impl == "fast" and (v, "reference", last) in by:
            verdicts.append(
                f"- {v}: "
                + speed_verdict(by[v, "fast", last], by[v, "reference", last], "fast", "reference")
            )
        for peer in ("torch_sdpa", "torch_sdpa_frames", "sana_lite_la"):
            if impl == "fast" and (v, peer, last) in by:
                verdicts.append(
                    f"- {v}: " + speed_verdict(by[v, "fast", last], by[v, peer, last], "fast", peer)
                )
    return [
        "## 1. The attention zoo on this CPU",
        "",
        f"fp32, B={zoo['shape']['B']}, H={zoo['shape']['H']}, D={zoo['shape']['D']}; "
        '`fast` is what `impl="auto"` runs on a CPU (torch\'s fused SDPA, matmul forms with '
        "the key state padded by the key sums), `reference` the exact-math definition, peers "
        "are torch SDPA and SANA's LiteLA; all candidates of a grid timed interleaved. "
        "`x GEMM floor`: median time over the time the analytic FLOPs take at the measured "
        "GEMM rate.",
        "",
        markdown_table(head, body),
        "",
        f"At N={last}:",
        *verdicts,
        "",
        "![latency vs N](plots/latency_vs_n.png)",
        "",
    ]


# -- 2. latency -------------------------------------------------------------------------------


def _latency_section(lat) -> list[str]:
    md = [
        "## 2. Per-block latency of the hybrid DiT",
        "",
        f"The search trades against **{lat['target']}** (the default: the runtime a CPU user "
        "ships). Each variant is timed as a stack of blocks (per block = stack / size), all "
        "variants and the non-block overhead interleaved.",
        "",
    ]
    for backend, b in lat["blocks"].items():
        per = {r["variant"]: r for r in b["variants"]}
        soft = per.get("softmax")
        rows = []
        for r in b["variants"]:
            if soft is None or r is soft:
                vs = "-"
            else:
                vs = speed_verdict(r, soft, r["variant"], "softmax")
            rows.append([r["variant"], _ci(r) + ("*" if b.get("cached") else ""), vs])
        rt = b.get("runtime", {})
        md += [
            f"**{backend}** ({rt.get('torch_threads', '?')} threads"
            + (
                f", onnxruntime {rt['onnxruntime']}, intra-op {rt['intra_op_threads']}, inter-op "
                f"{rt['inter_op_threads']}, spinning off, {rt['graph_optimization']}"
                + (f", softmax as {ATTENTION_WORDS[rt['attention']]}" if "attention" in rt else "")
                if "onnxruntime" in rt
                else ""
            )
            + f"): `{b['preset'].get('hidden')}`-wide blocks at grid "
            f"{'x'.join(map(str, b['grid']))} (N={b['N']}), batch 1, {b['measured_as']}; "
            f"non-block overhead {_ci(b['overhead'])} ms.",
            "",
            markdown_table(["variant", "block ms [95% CI]", "vs softmax"], rows),
            "",
        ]
    h = lat.get("host")
    if h:
        md += [
            f"Host loop around the step ({h['what']}): fixed {h['fixed_ms']:.2f} ms per clip, "
            f"{h['per_step_ms']:.2f} ms per step (added to each step's overhead in the search).",
            "",
        ]
    return md


# -- 3. teachers and students -------------------------------------------------------------------


def _teachers_section(q) -> list[str]:
    rows = []
    for t in q["teachers"]:
        h = t.get("sidecar_heldout") or {}
        at = h.get("psnr_at_steps", {})
        train = t.get("train_seconds")
        rows.append(
            [
                f"`{t['path']}`",
                str(t.get("seed")),
                _f(h.get("loss"), ".4f"),
                *[_f(at.get(k)) for k in ("2", "4", "20")],
                _f(h.get("copy_first_frame_psnr")),
                "n/a" if train is None else f"{train / 60:.0f} min",
                f"`{t.get('trained_by')}`",
            ]
        )
    md = [
        "## 3. Teachers and few-step students",
        "",
        "The teachers (all softmax, `small` preset) as their sidecars record them: held-out "
        "flow-matching loss, PSNR of frames 1.. sampled with 2, 4 and 20 Euler steps on "
        f"{q['teachers'][0].get('sidecar_n_heldout', '?')} held-out clips, and copying frame 0 "
        "for scale.",
        "",
        markdown_table(
            [
                "teacher",
                "seed",
                "loss",
                "PSNR 2",
                "PSNR 4",
                "PSNR 20",
                "copy frame 0",
                "train",
                "command",
            ],
            rows,
        ),
        "",
        "Quality vs steps on this run's held-out clips (same noise for every row): the "
        "teacher sampled with 1..20 Euler steps and each committed student at its own K.",
        "",
    ]
    for t in q["teachers"]:
        rows = [
            [
                r["model"],
                str(r["steps"]),
                _f(r.get("loss"), ".4f"),
                f"{r['psnr']:.2f}",
                f"{r['mse']:.5f}",
            ]
            for r in t["steps_table"]
        ]
        md += [
            f"Teacher `{t['path']}` (copy frame 0: {t['copy_first_frame_psnr']:.2f} dB):",
            "",
            markdown_table(["model", "steps", "FM loss", "PSNR dB", "pixel MSE"], rows),
            "",
        ]
    return md


def _quality_section(q) -> list[str]:
    md = [
        "## 4. Quality against each teacher's samplers",
        "",
        "One block's attention swapped and distilled (block-wise, against the model used at "
        "that step count: the teacher, or its K-step student), then sampled on the held-out "
        "clips. Cells: change of PSNR (dB) after distillation; `recovered`: the share of the "
        "undistilled swap's pixel-MSE increase that distillation removes.",
        "",
    ]
    for t in q["teachers"]:
        for steps, table in t["tables"].items():
            variants = [
                v for v in table["variants"] if v in {e["variant"] for e in table["entries"]}
            ]
            by = {(e["block"], e["variant"]): e for e in table["entries"]}
            own = table["base"]["attention"]
            rows = []
            for i in table["blocks"]:
                cells = []
                for v in variants:
                    e = by.get((i, v))
                    if e is not None:
                        cells.append(f"{e['delta_psnr']:+.2f}{_star(e)}")
                    else:
                        cells.append("(base)" if own[i] == v else "missing")
                rows.append([str(i), *cells])
            rec = []
            for v in variants:
                es = [e for e in table["entries"] if e["variant"] == v]
                up = sum(e["undistilled_delta_mse"] for e in es)
                after = sum(e["delta_mse"] for e in es)
                rec.append(f"{v}: {100 * (1 - after / up):.0f}%" if up > 0 else f"{v}: n/a")
            sampler = table.get("sampler", {})
            md += [
                f"<details><summary>Teacher <code>{t['path']}</code>, {steps} steps "
                f"({sampler.get('kind', '?')}): base PSNR {table['base']['psnr']:.2f} dB; "
                f"recovered {', '.join(rec)}</summary>",
                "",
                markdown_table(["block", *variants], rows),
                "",
                "</details>",
                "",
            ]
    return md


# -- 5. search --------------------------------------------------------------------------------


def _pair(p) -> str:
    return f"`{_pattern(p['config'])}` at {p['steps']} step{'s' * (p['steps'] > 1)}"


def _search_section(s, val, out) -> list[str]:
    md = [
        "## 5. Joint search over (sampling steps, per-block attention)",
        "",
        "The unit is a pair: clip latency = fixed part + steps x (overhead + the blocks' "
        "latencies) on the target backend; quality = the pixel MSE of the step count's base "
        "model plus the per-block swap deltas. The exact Pareto front over both (every step "
        "count's exact front, merged in exact arithmetic); budget: "
        f"`{s['teachers'][0]['budget_from']}` (MobileI2V's recipe: its 7:1 pattern at "
        f"{s['teachers'][0]['recipe']['steps']} steps, at its own latency).",
        "",
    ]
    rows = []
    for i, t in enumerate(s["teachers"]):
        for backend, r in t["by_backend"].items():
            rows.append(
                [
                    str(i),
                    backend + (" (target)" if backend == s["target"] else ""),
                    _pair(r["best"]),
                    f"{r['best']['latency_ms']:.0f}",
                    f"{mse_to_psnr(r['best']['quality']):.2f}",
                    _pair(r["recipe"]),
                    f"{r['recipe']['latency_ms']:.0f}",
                    f"{mse_to_psnr(r['recipe']['quality']):.2f}",
                ]
            )
    md += [
        "Chosen pair per teacher, on both CPU backends side by side (their softmax / linear "
        "cost ratios differ), predicted:",
        "",
        markdown_table(
            ["teacher", "backend", "chosen", "ms", "PSNR", "MobileI2V's recipe", "ms", "PSNR"],
            rows,
        ),
        "",
    ]
    t0 = s["teachers"][0]
    measured = []
    if val:
        for r in val["configs"]:
            if r["teacher"] == 0 and s["target"] in r:
                measured.append(
                    {
                        "latency_ms": r[s["target"]]["clip_measured_ms"],
                        "mse": r["mse"],
                        "label": f"{r['steps']}: {r['pattern'][:22]}",
                    }
                )
    plots.joint_front(
        t0["front"],
        out / "plots" / "pareto.png",
        marked={"chosen": t0["best"], "MobileI2V's recipe": t0["recipe"]},
        measured=measured,
        budget_ms=t0["budget_ms"],
    )
    front_rows = [
        [
            str(p["steps"]),
            f"{p['latency_ms']:.0f}",
            f"{mse_to_psnr(p['quality']):.2f}",
            _pattern(p["config"]),
        ]
        for p in t0["front"]
    ]
    md += [
        "![joint front](plots/pareto.png)",
        "",
        "<details><summary>Teacher 0's whole joint front</summary>",
        "",
        markdown_table(["steps", "clip ms", "predicted PSNR", "config"], front_rows),
        "",
        "</details>",
        "",
    ]
    return md


# -- 6. validate ------------------------------------------------------------------------------


def _validate_section(v, cfg) -> list[str]:
    md = [
        "## 6. Built for real and measured",
        "",
        "Each pair built (block distillation against its step count's model, the same "
        "weights the quality table measured) and sampled on the held-out clips; every "
        "distinct pattern timed as a whole model (one denoising step), all interleaved. "
        "Predicted: overhead + block sum from the latency stage's table (what the search "
        "used); same-round error: the same sum from block stacks timed again in the whole "
        "models' own rounds, so the machine's drift between the two stages is left out. "
        "Errors carry the 95% bootstrap interval from the repeats of both sides (for the "
        "same-round error, whole rounds resampled).",
        "",
    ]
    backends = list(v["whole_models"])
    rows = []
    for r in v["configs"]:
        name = (
            ("**" if r["chosen"] else "")
            + f"{r['pattern']} @ {r['steps']}"
            + ("**" if r["chosen"] else "")
        )
        if r["recipe"]:
            name += " (MobileI2V's recipe)"
        cells = [str(r["teacher"]), name]
        for b in backends:
            x = r[b]
            cells += [
                f"{x['step_predicted_ms']:.0f}",
                f"{x['step_measured_ms']:.0f} [{x['step_ci_ms'][0]:.0f}, {x['step_ci_ms'][1]:.0f}]",
                error_text(x["step_prediction_error"], x.get("step_prediction_error_ci")),
                error_text(x.get("step_same_rounds_error"), x.get("step_same_rounds_error_ci")),
            ]
        cells += [
            f"{mse_to_psnr(r['predicted_mse']):.2f}",
            f"{r['psnr']:.2f}{'*' if r['quality_cached'] else ''}",
        ]
        rows.append(cells)
    head = ["teacher", "pair"]
    for b in backends:
        head += [f"{b} step predicted ms", "measured ms", "error", "same-round error"]
    head += ["predicted PSNR", "measured PSNR"]
    md += [markdown_table(head, rows), ""]
    n_configs = len(v["configs"])
    over = f"over {n_configs} configs" + (
        f" (n/a below {MIN_RANKED}: two always rank +-1)" if n_configs < MIN_RANKED else ""
    )
    for b in backends:
        rho = v["spearman_latency"].get(b)
        worst = 100 * v["worst_step_prediction_error"][b]
        line = (
            f"- {b}: worst whole-model prediction error {worst:.1f}% (goal 5%), Spearman "
            f"predicted vs measured clip latency {_f(rho)} {over}"
        )
        same = v.get("worst_same_rounds_error", {}).get(b)
        if same is not None:
            line += (
                f"; from block stacks timed in the whole models' own rounds (the machine's "
                f"drift since the latency stage left out): worst error {100 * same:.1f}%"
            )
        cal = v.get("calibrated_step_prediction", {}).get(b)
        if cal and cal["configs"]:
            line += (
                f"; the block table times one in-model factor ({cal['factor']:.3f}, fitted "
                f"to the other models, each held out): worst error "
                f"{100 * cal['worst_error']:.1f}% over {cal['configs']} models"
            )
        full = v.get("full_depth_step_prediction", {}).get(b)
        if full:
            worst = max(full, key=lambda x: abs(x["error"]))
            line += (
                f"; the mixes from the all-one-variant models timed beside them (blocks "
                f"inside full-depth models): worst error "
                f"{error_text(worst['error'], worst['error_ci'])} over {len(full)} models"
            )
        md.append(line + ".")
    for b in backends:
        line = _gemm_line(b, v["whole_models"][b])
        if line:
            md.append(line)
    md.append(
        f"- Quality: Spearman predicted vs measured pixel MSE {_f(v['spearman_quality'])} {over}."
    )
    target = cfg.target
    for t in sorted({r["teacher"] for r in v["configs"]}):
        chosen = next(r for r in v["configs"] if r["teacher"] == t and r["chosen"])
        recipe = next(r for r in v["configs"] if r["teacher"] == t and r["recipe"])
        if target in chosen and chosen is not recipe:
            model = v["whole_models"][target]["models"]
            m_c = next(m for m in model if m["attention"] == chosen["attention"])
            m_r = next(m for m in model if m["attention"] == recipe["attention"])
            md.append(
                f"- Teacher {t}, one step on {target}: "
                + speed_verdict(m_c, m_r, "the chosen pattern", "MobileI2V's pattern")
                + f" (clips: {chosen['steps']} vs {recipe['steps']} steps)."
            )
    md.append("")
    return md


def _gemm_line(backend: str, table: dict) -> str | None:
    """The whole steps' fractions of the GEMM rate timed in their own rounds (through the
    backend's own matmul), or None where no GEMM was timed beside them."""
    g = table.get("gemm")
    rows = [m for m in table["models"] if m.get("fraction_of_gemm") is not None]
    if not g or not rows:
        return None
    lo = min(rows, key=lambda m: m["fraction_of_gemm"])
    hi = max(rows, key=lambda m: m["fraction_of_gemm"])
    return (
        f"- {backend}: whole steps at {100 * lo['fraction_of_gemm']:.0f}-"
        f"{100 * hi['fraction_of_gemm']:.0f}% of the fp32 GEMM rate (analytic FLOPs over "
        f"time; the rate of a ({g['n']} x {g['n']}) GEMM through {backend}'s own matmul, "
        f"timed in the same rounds: {g['gflops']:.0f} GFLOP/s); the lowest, "
        f"`{lo['pattern']}`, {gemm_cell(lo)} (goal 80%)."
    )


def _robustness_section(v) -> list[str]:
    rows = []
    for r in v["robustness"]:
        lo, hi = r["mse_gain_ci"]
        rows.append(
            [
                str(r["teacher"]),
                f"`{r['chosen']['pattern']}` @ {r['chosen']['steps']}",
                f"{r['chosen']['psnr']:.2f}",
                f"{r['recipe']['psnr']:.2f}",
                f"{r['psnr_gain_db']:+.2f}",
                f"{r['mse_gain']:+.5f} [{lo:+.5f}, {hi:+.5f}]",
                _better(lo, hi),
            ]
        )
    m = v["robustness_mean"]
    lo, hi = m["mse_gain_ci"]
    rows.append(
        [
            f"mean of {m['teachers']}",
            "",
            "",
            "",
            f"{m['psnr_gain_db']:+.2f}",
            f"{m['mse_gain']:+.5f} [{lo:+.5f}, {hi:+.5f}]",
            _better(lo, hi),
        ]
    )
    holds = (
        f"The chosen pair is better than MobileI2V's recipe for {m['chosen_better_for']} of "
        f"{m['teachers']} teachers and worse for {m['recipe_better_for']} (intervals that "
        "exclude 0); the rest are the same within noise."
    )
    return [
        "## 7. Robustness across teachers",
        "",
        "Chosen pair vs MobileI2V's recipe, both built for real on each teacher, on the same "
        "held-out clips and noise: PSNR of each, and the per-clip pixel-MSE gain (recipe - "
        "chosen; > 0: the chosen pair is better) with a 95% bootstrap interval over clips "
        "(the mean row pools every teacher's clips).",
        "",
        markdown_table(
            [
                "teacher",
                "chosen",
                "chosen PSNR",
                "recipe PSNR",
                "PSNR gain",
                "MSE gain [95% CI]",
                "verdict",
            ],
            rows,
        ),
        "",
        holds,
        "",
    ]


def _better(lo, hi) -> str:
    if lo > 0:
        return "chosen better"
    if hi < 0:
        return "recipe better"
    return "same within noise"


def _native_length(res: dict) -> str:
    """Says so when the natives trained for fewer steps than the teacher."""
    n, t = res.get("native_train_steps"), res.get("teacher_train_steps")
    if n is None or t is None or n == t:
        return ""
    return f" but {n} optimizer steps instead of its {t} (both natives alike)"


def _native_section() -> list[str]:
    path = Path(__file__).resolve().parents[1] / "bench" / "results" / "native-check.json"
    if not path.is_file():
        return [
            "## 8. Check of the method: native vs block-wise distilled",
            "",
            "Not run in this study (`make native-check` trains the hybrids from scratch and "
            "writes bench/results/native-check.json).",
            "",
        ]
    res = json.loads(path.read_text())
    rows = [
        [f"`{r['pattern']}`", f"{r['native_psnr']:.2f}", f"{r['distilled_psnr']:.2f}"]
        for r in res["rows"]
    ]
    return [
        "## 8. Check of the method: native vs block-wise distilled",
        "",
        f"From `bench/results/native-check.json` ({res.get('command')}): the same patterns "
        "trained from scratch with the teacher's recipe"
        + _native_length(res)
        + " vs built by block-wise distillation "
        f"from the teacher, PSNR at {res.get('steps')} steps on {res.get('n_heldout')} "
        f"held-out clips. {res.get('verdict', '')}",
        "",
        markdown_table(["pattern", "native PSNR", "distilled PSNR"], rows),
        "",
    ]


# -- export -----------------------------------------------------------------------------------


def _export_section(e, out) -> list[str]:
    onnx = e["onnx"]
    md = [
        "## 10. Export of the chosen pair",
        "",
        f"{e['preset']}, attention `{_pattern(e['attention'])}`, sampled with {e['steps']} steps.",
        "",
        f"- ONNX: `{_rel(onnx['path'], out)}`; onnxruntime vs torch (fp32) relative error "
        f"{onnx['rel']:.2e} ({'ok' if onnx['ok'] else 'FAILED'}).",
    ]
    cm = e["coreml"]
    if cm.get("status") == "written":
        lint = cm.get("lint")
        lint_s = (
            f"{len(lint['errors'])} errors, {len(lint['warnings'])} warnings"
            if isinstance(lint, dict)
            else str(lint)
        )
        mil = cm.get("run_mil")
        mil_s = f"PSNR {mil['psnr_db']:.1f} dB" if isinstance(mil, dict) else str(mil)
        md.append(
            f"- Core ML (ANE twin, fp16): `{_rel(cm['path'], out)}`; ANE lint: {lint_s}; "
            f"MIL interpreter vs torch: {mil_s}."
        )
        if isinstance(e.get("clip"), dict):
            md.append(f"- A clip generated through the Core ML program: {json.dumps(e['clip'])}.")
    else:
        md.append(f"- Core ML: {cm.get('status')} ({cm.get('reason', '')}).")
    md.append("")
    return md


def _rel(path: str, out: Path) -> str:
    p, o = Path(path).resolve(), Path(out).resolve()
    return str(p.relative_to(o)) if p.is_relative_to(o) else str(path)
