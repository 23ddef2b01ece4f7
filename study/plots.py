"""PNG plots for the report (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from export.files import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def latency_vs_n(
    rows: Sequence[dict],
    gemm_gflops: float,
    mem_gbps: float | None,
    path: str | Path,
    title: str = "Attention latency vs sequence length",
) -> Path:
    """rows: dicts with variant, N, median_ms, flops, bytes (and impl: only the "fast" rows,
    what impl="auto" runs, are drawn when there are several). Each variant's measured curve
    (solid) and its roofline bound max(flops / GEMM rate, bytes / memory bandwidth)
    (dotted, same colour)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    if any("impl" in r for r in rows):
        rows = [r for r in rows if r.get("impl") == "fast"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    colors = plt.get_cmap("tab10")
    for i, name in enumerate(variants):
        pts = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["N"])
        ns = [r["N"] for r in pts]
        color = colors(i % 10)
        ax.plot(ns, [r["median_ms"] for r in pts], "o-", color=color, label=name)
        bound = []
        for r in pts:
            t = r["flops"] / (gemm_gflops * 1e9)
            if mem_gbps:
                t = max(t, r["bytes"] / (mem_gbps * 1e9))
            bound.append(t * 1e3)
        ax.plot(ns, bound, ":", color=color, linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens N")
    ax.set_ylabel("median latency (ms)")
    scale = f"GEMM {gemm_gflops:.0f} GFLOP/s"
    if mem_gbps:
        scale += f", copy {mem_gbps:.1f} GB/s"
    ax.set_title(f"{title}\n(dotted: roofline bound from {scale}, measured in the same run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def joint_front(
    points: Sequence[dict],
    path: str | Path,
    marked: dict[str, dict] | None = None,
    measured: Sequence[dict] = (),
    budget_ms: float | None = None,
    title: str = "Joint search over (sampling steps, per-block attention)",
) -> Path:
    """points: the joint front, dicts with steps, latency_ms, quality (pixel MSE); one
    marker shape per step count. marked: named pairs (the chosen one, MobileI2V's recipe)
    as labelled stars; measured: dicts with latency_ms, mse, label of pairs built for real.
    The quality axis is drawn as PSNR (10 log10(4 / MSE)), higher is better."""
    from study.evaluate import mse_to_psnr as db

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))

    shapes = dict(zip(sorted({p["steps"] for p in points}), "osD^v<>", strict=False))
    for steps, marker in shapes.items():
        pts = [p for p in points if p["steps"] == steps]
        ax.plot(
            [p["latency_ms"] for p in pts],
            [db(p["quality"]) for p in pts],
            marker,
            linestyle="none",
            markersize=6,
            label=f"front, {steps} step{'s' * (steps > 1)}",
        )
    xs = [p["latency_ms"] for p in points]
    ax.step(xs, [db(p["quality"]) for p in points], where="post", color="0.6", linewidth=1)
    stars = iter("*PX")
    for name, p in (marked or {}).items():
        ax.plot(p["latency_ms"], db(p["quality"]), next(stars, "*"), markersize=14, label=name)
    for m in measured:
        ax.plot(
            m["latency_ms"],
            db(m["mse"]),
            "s",
            markerfacecolor="none",
            markersize=9,
            color="tab:red",
        )
        ax.annotate(
            m["label"],
            (m["latency_ms"], db(m["mse"])),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    if measured:
        ax.plot([], [], "s", markerfacecolor="none", color="tab:red", label="built and measured")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="tab:green", linestyle="--", label=f"budget {budget_ms:.0f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("predicted latency of one clip (ms, the target backend)")
    ax.set_ylabel("predicted PSNR of sampled frames (dB)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def image_grid(rows: dict, path: str | Path, frames=None, title: str = "") -> Path:
    """rows: label -> (B, 3, T, H, W) video tensors in [-1, 1] (the same clips in every row).
    One panel per (clip, frame); a row per label."""
    plt = _pyplot()
    labels = list(rows)
    first = rows[labels[0]]
    clips, t = first.shape[0], first.shape[2]
    frames = list(range(t)) if frames is None else list(frames)
    cols = clips * len(frames)
    fig, axes = plt.subplots(
        len(labels), cols, figsize=(1.1 * cols, 1.25 * len(labels)), squeeze=False
    )
    for r, label in enumerate(labels):
        video = rows[label].float().clamp(-1, 1).add(1).div(2)
        for c in range(clips):
            for j, f in enumerate(frames):
                ax = axes[r][c * len(frames) + j]
                ax.imshow(video[c, :, f].permute(1, 2, 0).numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"clip {c} t={f}", fontsize=6)
                if c == 0 and j == 0:
                    ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
