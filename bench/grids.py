"""Token grids (T, H, W) for benchmarks that are given a sequence length N only."""

from __future__ import annotations

import math


def divisors(n: int) -> list[int]:
    """The positive divisors of n, ascending."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def grid_for(n: int, frames: int = 3, aspect: float = 16 / 9) -> tuple[int, int, int]:
    """A video-like token grid (T, H, W) with T * H * W = n.

    T is the divisor of n closest to `frames` (ties go to fewer frames; MobileI2V's 17-frame
    clips have 3 latent frames), then H <= W is the factor pair of n / T whose ratio W / H
    is closest to `aspect` in log scale. For n = 2760 this gives MobileI2V's 720p grid
    (3, 23, 40); for n = 6120 the 1080p one (3, 34, 60). A prime n / T gives (T, 1, n / T).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive int, got {frames!r}")
    if not (isinstance(aspect, (int, float)) and math.isfinite(aspect) and aspect > 0):
        raise ValueError(f"aspect must be a finite number > 0, got {aspect!r}")
    t = min(divisors(n), key=lambda d: (abs(d - frames), d))
    per_frame = n // t
    pairs = [(h, per_frame // h) for h in divisors(per_frame) if h * h <= per_frame]
    h, w = min(pairs, key=lambda p: (abs(math.log(p[1] / p[0]) - math.log(aspect)), p[0]))
    if t * h * w != n:
        raise AssertionError(f"grid {(t, h, w)} does not multiply to n={n}")
    return t, h, w
