"""report.md and its plots, from the study's tables."""

from __future__ import annotations

import time
from pathlib import Path

from export.files import write_text
from study import plots
from study.tables import markdown_table


def _pattern(names) -> str:
    from hybrid_dit.config import format_pattern

    return format_pattern(tuple(names))


def _f(x, fmt=".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


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
        f"1-minute load average at the start: {machine.get('load_average_1min', '?')}.",
    ]
    if zoo:
        md.append(
            f"- Measured in this run: fp32 GEMM {zoo['gemm']['gflops']:.1f} GFLOP/s "
            f"(torch matmul {zoo['gemm']['n']}^3, median of {zoo['gemm']['repeats']}), "
            f"copy bandwidth {zoo['copy_gbps']:.1f} GB/s. Rates below are quoted against these."
        )
    hits = len(study.cache.hits)
    misses = len(study.cache.misses)
    md.append(
        f"- Measurements: {misses} measured now, {hits} reused from the per-machine cache "
        "(tables mark reused rows with `*`; `mobileattn run --fresh` measures everything)."
    )
    md.append("- All latencies are medians of repeated runs on a shared machine.")
    if cfg.notes:
        md += [
            "",
            "The quick default leaves out (run `mobileattn run --full` for the whole sweep):",
        ]
        md += [f"- {n}" for n in cfg.notes]
    md.append("")

    if zoo:
        md += _zoo_section(zoo, out)
    if "latency" in t:
        md += _latency_section(t["latency"])
    if "quality" in t:
        md += _quality_section(t["quality"])
    if "search" in t:
        md += _search_section(t["search"], t.get("validate"), out)
    if "validate" in t:
        md += _validate_section(t["validate"])
    if "export" in t:
        md += _export_section(t["export"], out)
    md += ["## Stage times", ""]
    md.append(
        markdown_table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in study.timings.items()])
    )
    md.append("")
    return write_text(out / "report.md", "\n".join(md))


def _star(row) -> str:
    return "*" if row.get("cached") else ""


def _zoo_section(zoo, out) -> list[str]:
    rows = zoo["rows"]
    ns = sorted({r["N"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {(r["variant"], r["N"]): r for r in rows}
    head = ["variant", *[f"N={n} ms" for n in ns], f"N={ns[-1]} % of GEMM"]
    body = []
    for v in variants:
        cells = [
            f"{by[v, n]['median_ms']:.2f}{_star(by[v, n])}" if (v, n) in by else "-" for n in ns
        ]
        last = by.get((v, ns[-1]))
        body.append([v, *cells, f"{100 * last['fraction_of_gemm']:.1f}%" if last else "-"])
    plots.latency_vs_n(
        rows,
        zoo["gemm"]["gflops"],
        zoo.get("copy_gbps"),
        out / "plots" / "latency_vs_n.png",
        title="Zoo references on this CPU (fp32, B=1, H=16, D=72)",
    )
    return [
        "## 1. The attention zoo on this CPU",
        "",
        f"Reference implementations, fp32, B={zoo['shape']['B']}, H={zoo['shape']['H']}, "
        f"D={zoo['shape']['D']}; grids "
        + ", ".join("x".join(map(str, g)) for g in dict.fromkeys(tuple(r["grid"]) for r in rows))
        + ".",
        "",
        markdown_table(head, body),
        "",
        "![latency vs N](plots/latency_vs_n.png)",
        "",
    ]


def _latency_section(lat) -> list[str]:
    md = ["## 2. Per-block latency of the hybrid DiT", ""]
    for backend, b in lat["blocks"].items():
        per = {r["variant"]: r for r in b["variants"]}
        soft = per.get("softmax", {}).get("median_ms")
        rows = [
            [
                r["variant"],
                f"{r['median_ms']:.1f}{_star(r)}",
                f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}",
                _f(soft / r["median_ms"]) + "x" if soft else "-",
            ]
            for r in b["variants"]
        ]
        md += [
            f"**{backend}**, `{b['preset'].get('hidden')}`-wide blocks at grid "
            f"{'x'.join(map(str, b['grid']))} (N={b['N']}), batch 1: one block per variant "
            f"({b['measured_as']}); non-block overhead {b['overhead']['median_ms']:.1f} ms.",
            "",
            markdown_table(["variant", "block ms", "p10-p90", "speedup vs softmax"], rows),
            "",
        ]
    for backend, m in lat.get("models", {}).items():
        rows = [
            [
                r["pattern"],
                f"{r['median_ms']:.0f}{_star(r)}",
                _f(r.get("predicted_ms"), ".0f"),
                _f(100 * r["prediction_error"], "+.1f") + "%" if "prediction_error" in r else "-",
                f"{r['gflops']:.1f}",
            ]
            for r in m["models"]
        ]
        md += [
            f"Whole model on **{backend}** (one denoising step): measured against the sum of "
            "its block latencies plus the overhead.",
            "",
            markdown_table(
                ["pattern", "measured ms", "sum of blocks ms", "error", "GFLOP/s"], rows
            ),
            "",
        ]
    return md


def _quality_section(q) -> list[str]:
    teacher = q["teacher"]
    variants = [v for v in q["variants"]]
    blocks = q["blocks"]
    by = {(e["block"], e["variant"]): e for e in q["entries"]}
    rows = []
    own = teacher["attention"]
    for i in blocks:
        cells = []
        for v in variants:
            e = by.get((i, v))
            if e is not None:
                cells.append(f"{e['delta_loss']:+.4f} / {e['delta_psnr']:+.2f}")
            else:  # the teacher's own variant is the baseline; anything else was not measured
                cells.append("(teacher)" if own[i] == v else "missing")
        rows.append([str(i), *cells])
    return [
        "## 3. Quality against the teacher",
        "",
        f"Teacher (all softmax, `small` preset, trained by `{teacher.get('trained_by')}`): "
        f"held-out flow-matching loss {teacher['loss']:.4f}, PSNR of sampled frames "
        f"{teacher['psnr']:.2f} dB. Copying the first frame scores "
        f"{q['copy_first_frame_psnr']:.2f} dB (the floor).",
        "",
        "Each cell: one block's attention swapped and distilled against the teacher; change of "
        "held-out loss / change of PSNR (dB). Lower loss is better.",
        "",
        markdown_table(["block", *variants], rows),
        "",
    ]


def _search_section(s, val, out) -> list[str]:
    front = [(p["latency_ms"], p["quality_loss"]) for p in s["front"]]
    best = s["best"]
    paper = s["mobilei2v"]
    marked = {
        "chosen": (best["latency_ms"], best["quality_loss"]),
        "MobileI2V 7:1": (paper["latency_ms"], paper["quality_loss"]),
    }
    measured = []
    if val:
        measured = [
            (r["measured_ms"] - s["overhead_ms"], r["measured_loss"], r["pattern"][:24])
            for r in val["configs"]
        ]
    plots.pareto_front(
        front,
        out / "plots" / "pareto.png",
        marked=marked,
        measured=measured,
        budget_ms=s["budget_ms"],
        xlabel="predicted latency of the blocks, ms (torch-cpu)",
        ylabel="predicted held-out loss increase",
    )
    rows = [
        [f"{p['latency_ms']:.0f}", f"{p['quality_loss']:+.4f}", _pattern(p["config"])]
        for p in s["front"]
    ]
    return [
        "## 4. Search",
        "",
        f"Exact multiple-choice knapsack over {len(s['variants'])} blocks; budget "
        f"{s['budget_ms']:.0f} ms of block latency ({s['budget_from']}). Front: "
        f"{len(s['front'])} configs.",
        "",
        f"- Chosen: `{_pattern(best['config'])}`, predicted {best['latency_ms']:.0f} ms, "
        f"loss {best['quality_loss']:+.4f}.",
        f"- MobileI2V's pattern: `{_pattern(paper['attention'])}`, predicted "
        f"{paper['latency_ms']:.0f} ms, loss {paper['quality_loss']:+.4f}.",
        "",
        "![Pareto front](plots/pareto.png)",
        "",
        "<details><summary>The whole Pareto front</summary>",
        "",
        markdown_table(["blocks ms", "loss", "config"], rows),
        "",
        "</details>",
        "",
    ]


def _validate_section(v) -> list[str]:
    rows = [
        [
            ("**" if r["chosen"] else "") + r["pattern"] + ("**" if r["chosen"] else ""),
            f"{r['predicted_ms']:.0f}",
            f"{r['measured_ms']:.0f}{'*' if r['latency_cached'] else ''}",
            f"{r['predicted_loss']:+.4f}",
            f"{r['measured_loss']:+.4f}{'*' if r['quality_cached'] else ''}",
            f"{r['psnr']:.2f}",
        ]
        for r in v["configs"]
    ]
    by = {r["pattern"]: r for r in v["configs"]}
    chosen = next(r for r in v["configs"] if r["chosen"])
    lines = []
    for name, pat in (
        ("all softmax", "softmax*16"),
        ("MobileI2V's pattern", "relu_linear*7,softmax,relu_linear*7,softmax"),
    ):
        r = by.get(pat)
        if r:
            lines.append(
                f"- chosen vs {name}: {r['measured_ms'] / chosen['measured_ms']:.2f}x "
                f"faster (measured whole model, same run), loss "
                f"{chosen['measured_loss'] - r['measured_loss']:+.4f}"
            )
    return [
        "## 5. Configs built for real",
        "",
        "Each config: every swapped block distilled, then a short whole-model distillation; "
        "latency of the whole mobilei2v model on torch-cpu, quality on the small model.",
        "",
        markdown_table(
            ["config", "predicted ms", "measured ms", "predicted loss", "measured loss", "PSNR dB"],
            rows,
        ),
        "",
        *lines,
        f"- Spearman rank correlation, predicted vs measured: latency "
        f"{_f(v['spearman_latency'])}, quality {_f(v['spearman_quality'])}.",
        "",
    ]


def _export_section(e, out) -> list[str]:
    onnx = e["onnx"]
    md = [
        "## 6. Export of the chosen config",
        "",
        f"{e['preset']}, attention `{_pattern(e['attention'])}`, grid "
        f"{'x'.join(map(str, e['grid']))}.",
        "",
        f"- ONNX: `{_rel(onnx['path'], out)}`; "
        f"onnxruntime vs torch (fp32) relative error {onnx['rel']:.2e} "
        f"({'ok' if onnx['ok'] else 'FAILED'}), onnxruntime {1e3 * onnx['ort_median_s']:.1f} ms.",
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
    else:
        md.append(f"- Core ML: {cm.get('status')} ({cm.get('reason', '')}).")
    md.append("")
    return md


def _rel(path: str, out: Path) -> str:
    p, o = Path(path).resolve(), Path(out).resolve()
    return str(p.relative_to(o)) if p.is_relative_to(o) else str(path)
