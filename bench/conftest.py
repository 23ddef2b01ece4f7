"""Options for the benchmarks under bench/ (collected only when bench/ is given to pytest).

pytest bench --benchmark-only                                  # the full sweep
pytest bench --benchmark-disable --bench-sizes 64              # smoke run: each case once
"""

from __future__ import annotations

import pytest

DEFAULT_SIZES = (256, 1024, 2760, 6120, 16384)


def pytest_addoption(parser):
    parser.addoption(
        "--bench-sizes",
        default=None,
        help="comma-separated sequence lengths N for the attention microbenchmarks "
        f"(default: {','.join(map(str, DEFAULT_SIZES))})",
    )


def bench_sizes(config) -> tuple[int, ...]:
    """The sequence lengths chosen by --bench-sizes, or DEFAULT_SIZES."""
    raw = config.getoption("--bench-sizes")
    if raw is None:
        return DEFAULT_SIZES
    try:
        sizes = tuple(int(s) for s in raw.split(",") if s.strip())
    except ValueError:
        raise pytest.UsageError(
            f"--bench-sizes must be comma-separated positive ints, got {raw!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise pytest.UsageError(f"--bench-sizes must be comma-separated positive ints, got {raw!r}")
    return sizes


def pytest_configure(config):
    """The microbenchmarks run with the allocator every timing of ours uses."""
    from bench.machine import keep_freed_memory

    keep_freed_memory()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Saved benchmark JSON carries our machine description and the fp32 GEMM rate measured
    in the same run (the roofline scale)."""
    from bench.machine import gemm_rate
    from bench.machine import machine_info as describe

    machine_info["mobileattn"] = describe()
    machine_info["mobileattn"]["gemm_fp32_gflops"] = gemm_rate()
