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
    """rows: dicts with variant, N, median_ms, flops, bytes. Each variant's measured curve
    (solid) and its roofline bound max(flops / GEMM rate, bytes / memory bandwidth)
    (dotted, same colour)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
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


def pareto_front(
    front: Sequence[tuple[float, float]],
    path: str | Path,
    marked: dict[str, tuple[float, float]] | None = None,
    measured: Sequence[tuple[float, float, str]] = (),
    budget_ms: float | None = None,
    xlabel: str = "predicted latency (ms)",
    ylabel: str = "predicted quality loss",
    title: str = "Per-block attention choice: Pareto front",
) -> Path:
    """front: (latency, loss) points, sorted by latency. marked: named configs drawn as
    labelled stars (the chosen config, MobileI2V's pattern, ...). measured: (latency, loss,
    label) of configs built for real."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    if front:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="0.5", linewidth=1)
        ax.plot(xs, ys, ".", color="0.3", label=f"Pareto front ({len(front)} configs)")
    markers = iter("*DPX^v")
    for name, (x, y) in (marked or {}).items():
        ax.plot(x, y, next(markers, "o"), markersize=12, label=name)
    for x, y, label in measured:
        ax.plot(x, y, "s", markerfacecolor="none", markersize=9, color="tab:red")
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if measured:
        ax.plot([], [], "s", markerfacecolor="none", color="tab:red", label="built and measured")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="tab:green", linestyle="--", label=f"budget {budget_ms:.0f} ms")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
