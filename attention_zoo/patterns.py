"""Attention patterns: one zoo variant per block, written as data ("L*7,S,L*7,S"), parsed
and formatted here so the model (hybrid_dit), diffusers models (attention_zoo.diffusers)
and the study all read the same grammar."""

from __future__ import annotations

from attention_zoo.registry import get

# Short names accepted in patterns; MobileI2V's two block kinds.
ALIASES = {"L": "relu_linear", "S": "softmax"}


def parse_pattern(
    pattern,
    depth: int | None = None,
    name: str = "attention",
    unit: str = "block",
    expected: str | None = None,
) -> tuple[str, ...]:
    """Parses an attention pattern into one zoo variant name per block.

    pattern: a sequence of names, or a string of comma-separated entries `NAME` or
        `NAME*K` (K repeats), e.g. "L*7,S,L*7,S" or "relu_linear*7,softmax". L and S are
        aliases of relu_linear and softmax.
    depth: when given, the result must have `depth` entries; a single entry without a count
        ("softmax") fills every block.
    name, unit, expected: how errors call the pattern, what it has one entry per, and how
        they state the expected length (default "depth=N", a model config's own field).
    """
    if isinstance(pattern, str):
        entries = [e.strip() for e in pattern.split(",")]
        if not pattern.strip() or any(not e for e in entries):
            raise ValueError(
                f"{name} pattern must be comma-separated NAME or NAME*K entries, got {pattern!r}"
            )
        names: list[str] = []
        for entry in entries:
            entry_name, star, count = (s.strip() for s in entry.partition("*"))
            if star:
                if not count.isdigit() or int(count) < 1:
                    raise ValueError(
                        f"{name} pattern entry {entry!r}: the count after '*' must be a "
                        f"positive int, got {count!r}"
                    )
                names.extend([entry_name] * int(count))
            else:
                names.append(entry_name)
        if depth is not None and len(entries) == 1 and "*" not in entries[0]:
            names = names * depth
    elif isinstance(pattern, (tuple, list)):
        names = list(pattern)
    else:
        raise TypeError(
            f"{name} must be a pattern string or a sequence of variant names, "
            f"got {type(pattern).__name__}"
        )
    out = []
    for entry in names:
        if not isinstance(entry, str):
            raise TypeError(f"{name} entries must be str, got {type(entry).__name__} {entry!r}")
        entry = ALIASES.get(entry, entry)
        try:
            get(entry)
        except KeyError as e:
            raise ValueError(f"{name}: {e.args[0]}") from None
        out.append(entry)
    if depth is not None and len(out) != depth:
        expected = f"depth={depth}" if expected is None else expected
        raise ValueError(
            f"{name} must name one variant per {unit} ({expected}), got {len(out)}: {pattern!r}"
        )
    return tuple(out)


def format_pattern(names: tuple[str, ...]) -> str:
    """The shortest `NAME*K` string for a pattern (run-length encoded), e.g.
    ("relu_linear",) * 7 + ("softmax",) -> "relu_linear*7,softmax"."""
    runs: list[list] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return ",".join(n if k == 1 else f"{n}*{k}" for n, k in runs)
