"""The house is one-way: imports run down the layers of design.md and README's Layout, never
back up, and no module imports itself through others (no cycles).

    kernels <- attention_zoo <- hybrid_dit <- export <- bench <- study <- mobileattn

Every import counts, the lazy ones inside functions included: a back arrow that only runs
when a function is called is still a back arrow. Read from the source with `ast`, so the
test needs nothing installed and imports nothing it checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own package and any package before it.
LAYERS = ("kernels", "attention_zoo", "hybrid_dit", "export", "bench", "study", "mobileattn")
RANK = {name: i for i, name in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


MODULES = modules()


def imported(path: Path, name: str) -> set[str]:
    """Our modules that `path` (module `name`) imports anywhere in its body, resolved to the
    most specific module that exists (`from pkg import sub` -> pkg.sub if that is a
    module, else pkg)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in MODULES else _resolve(base))
    found.discard(None)
    found.discard(name)
    return found


def _resolve(target: str) -> str | None:
    """The most specific of our modules that `target` names, or None if not ours."""
    if target.split(".")[0] not in RANK:
        return None
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {name: imported(path, name) for name, path in MODULES.items()}


def test_the_layers_are_all_there():
    assert set(RANK) <= {m.split(".")[0] for m in MODULES}
    assert len(MODULES) > 60  # the walk found the code, not an empty tree


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_runs_back_up_the_layers(name):
    mine = RANK[name.split(".")[0]]
    back = sorted(t for t in GRAPH[name] if RANK[t.split(".")[0]] > mine)
    assert not back, (
        f"{name} (layer {LAYERS[mine]}) imports {back}, which sit above it; the order is "
        + " <- ".join(LAYERS)
    )


def test_kernels_import_nothing_of_ours():
    offenders = {
        name: sorted(t for t in deps if not t.startswith("kernels"))
        for name, deps in GRAPH.items()
        if name.startswith("kernels")
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_no_cycles():
    """Depth-first search over the module graph; a back edge is a cycle."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []
    cycles = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(GRAPH[n]):
            if state.get(m) == 1:
                cycles.append([*stack[stack.index(m) :], m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(GRAPH):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The parser itself: an import inside a function, a relative import and a `from pkg
    import submodule` all resolve to our modules, so a back arrow cannot hide in them."""
    src = tmp_path / "hybrid_dit" / "probe.py"
    src.parent.mkdir()
    src.write_text(
        "def f():\n    from study.search import search\n"
        "from . import model\nfrom export import onnx\nimport numpy\n"
    )
    assert imported(src, "hybrid_dit.probe") == {"study.search", "hybrid_dit.model", "export.onnx"}
