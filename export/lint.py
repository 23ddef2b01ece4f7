"""ANE lint: checks a Core ML ML Program for what keeps it off (or slow on) the Neural Engine.

    from export import ane_lint
    report = ane_lint("attn.mlpackage")
    print(report); report.ok; report.errors; report.warnings; report.histogram

Errors (the op or tensor falls off the ANE, splitting the graph between engines):
  - an op outside the ANE-friendly allow-list below;
  - a tensor of rank above 4, or with a dimension above 16384;
  - a floating op computing in fp32 inside an fp16 program (the ANE computes in fp16).
Warnings (runs, but moves data or wastes memory):
  - every transpose and reshape (Apple's principle: no layout changes; einsum instead);
  - a last axis so short that the ANE's 64-byte row alignment wastes most of a large buffer;
  - an fp32 program (the ANE runs fp16 only; Core ML runs it on the CPU/GPU).

The allow-list follows Apple's ml-ane-transformers / ml-stable-diffusion forms and the ops
Core ML is reported to place on the ANE; it is deliberately conservative.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from export.mil import PRECISION_KEY, Program, TensorSpec, load_program, tensor_spec
from hybrid_dit.ane import ANE_MAX_DIM

ANE_OPS = frozenset(
    {
        "const",
        # contractions
        "conv",
        "conv_transpose",
        "einsum",
        "matmul",
        "linear",
        # elementwise
        "add",
        "sub",
        "mul",
        "real_div",
        "maximum",
        "minimum",
        "pow",
        "sqrt",
        "rsqrt",
        "inverse",
        "exp",
        "log",
        "abs",
        "square",
        "clip",
        "select",
        "equal",
        "not_equal",
        "greater",
        "greater_equal",
        "less",
        "less_equal",
        "cast",
        # activations
        "relu",
        "relu6",
        "elu",
        "leaky_relu",
        "sigmoid",
        "silu",
        "gelu",
        "tanh",
        "softplus",
        "softmax",
        # reductions and normalisation
        "reduce_sum",
        "reduce_mean",
        "reduce_max",
        "reduce_min",
        "reduce_l2_norm",
        "layer_norm",
        "batch_norm",
        "instance_norm",
        # layout (transpose and reshape are allowed but warned about)
        "split",
        "concat",
        "slice_by_index",
        "slice_by_size",
        "expand_dims",
        "squeeze",
        "transpose",
        "reshape",
        "tile",
        "pad",
        "identity",
        "avg_pool",
        "max_pool",
        "upsample_nearest_neighbor",
    }
)
LAYOUT_OPS = ("transpose", "reshape")
MAX_RANK = 4  # the ANE works on rank-4 (N, C, H, W) buffers
# Larger dimensions are reported to fall back off the ANE; the ANE twin sizes its views by it.
MAX_DIM = ANE_MAX_DIM
ROW_ALIGN_BYTES = 64  # the ANE pads each last-axis row to 64 bytes
PAD_WASTE_FRACTION = 0.5  # "most of the buffer"
PAD_WASTE_MIN_BYTES = 16 * 1024  # ignore small buffers, where padding costs nothing real

_ITEMSIZE = {
    "FLOAT16": 2,
    "BFLOAT16": 2,
    "FLOAT32": 4,
    "FLOAT64": 8,
    "INT8": 1,
    "UINT8": 1,
    "INT16": 2,
    "UINT16": 2,
    "INT32": 4,
    "UINT32": 4,
    "INT64": 8,
    "UINT64": 8,
    "BOOL": 1,
}


@dataclass(frozen=True)
class Finding:
    """One lint finding about one op (or program input)."""

    severity: str  # "error" | "warning"
    check: str  # "op" | "rank" | "dim" | "fp32" | "layout" | "padding" | "precision"
    op_type: str
    op_name: str  # the op's first output name (MIL names ops by their outputs)
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: [{self.check}] {self.op_type} {self.op_name!r}: {self.message}"


@dataclass
class LintReport:
    """What ane_lint found in one program."""

    source: str
    precision: str  # "fp16" | "fp32"
    histogram: dict[str, int]  # op type -> count (consts included)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing keeps the program off the ANE (warnings allowed)."""
        return not self.errors

    @property
    def n_ops(self) -> int:
        """Ops that do work (consts excluded)."""
        return sum(n for t, n in self.histogram.items() if t != "const")

    def summary(self) -> str:
        layout = ", ".join(f"{self.histogram.get(t, 0)} {t}" for t in LAYOUT_OPS)
        return (
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s); "
            f"{self.n_ops} ops ({layout}); {self.precision}"
        )

    def __str__(self) -> str:
        lines = [f"ANE lint: {self.source}", f"  {self.summary()}", "  ops:"]
        width = max((len(t) for t in self.histogram), default=0)
        for op_type, count in sorted(self.histogram.items(), key=lambda kv: (-kv[1], kv[0])):
            mark = "" if op_type in ANE_OPS else "   <- not ANE-friendly"
            lines.append(f"    {op_type:<{width}}  {count:>5}{mark}")
        for title, items in (("errors", self.errors), ("warnings", self.warnings)):
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    {f}" for f in items)
        lines.append("  OK: no errors" if self.ok else "  FAILED: see errors")
        return "\n".join(lines)


def _program_precision(prog: Program, outputs: list[tuple[object, TensorSpec]]) -> str:
    if prog.metadata.get(PRECISION_KEY) in ("fp16", "fp32"):
        return prog.metadata[PRECISION_KEY]
    dtypes = {spec.dtype for _, spec in outputs}
    return "fp16" if "FLOAT16" in dtypes else "fp32"


def _shape_findings(op_type: str, spec: TensorSpec) -> list[Finding]:
    out = []
    if spec.shape is None:
        return out
    if len(spec.shape) > MAX_RANK:
        out.append(
            Finding(
                "error",
                "rank",
                op_type,
                spec.name,
                f"rank {len(spec.shape)} tensor {spec.shape}; the ANE takes rank <= {MAX_RANK}",
            )
        )
    big = [d for d in spec.shape if d > MAX_DIM]
    if big:
        out.append(
            Finding(
                "error",
                "dim",
                op_type,
                spec.name,
                f"dimension {max(big)} > {MAX_DIM} in {spec.shape}; such tensors leave the ANE",
            )
        )
    itemsize = _ITEMSIZE.get(spec.dtype)
    if itemsize and spec.shape and spec.shape[-1] > 0:
        row = spec.shape[-1] * itemsize
        padded = math.ceil(row / ROW_ALIGN_BYTES) * ROW_ALIGN_BYTES
        rows = math.prod(spec.shape[:-1])
        waste = 1 - row / padded
        if waste > PAD_WASTE_FRACTION and rows * (padded - row) >= PAD_WASTE_MIN_BYTES:
            out.append(
                Finding(
                    "warning",
                    "padding",
                    op_type,
                    spec.name,
                    f"last axis {spec.shape[-1]} x {itemsize} B pads to {padded} B: "
                    f"{waste:.0%} of {rows * padded / 1024:.0f} KiB wasted; put a long axis last",
                )
            )
    return out


def ane_lint(path_or_model) -> LintReport:
    """Lints an ML Program (an .mlpackage path, a coremltools MLModel or a Model spec)."""
    prog = load_program(path_or_model)
    ops = prog.operations
    histogram = dict(Counter(op.type for op in ops))
    outputs = [
        (op, tensor_spec(o.name, o.type)) for op in ops if op.type != "const" for o in op.outputs
    ]
    precision = _program_precision(prog, outputs)
    findings: list[Finding] = []
    for spec in prog.inputs:
        findings += _shape_findings("input", spec)
    block_outputs = set(prog.outputs)
    for op in ops:
        if op.type not in ANE_OPS:
            name = op.outputs[0].name if op.outputs else "?"
            findings.append(
                Finding(
                    "error",
                    "op",
                    op.type,
                    name,
                    "op outside the ANE allow-list; Core ML runs it on the CPU/GPU",
                )
            )
        if op.type in LAYOUT_OPS:
            name = op.outputs[0].name if op.outputs else "?"
            findings.append(
                Finding(
                    "warning",
                    "layout",
                    op.type,
                    name,
                    "layout change moves the whole tensor; prefer channels-first einsum forms",
                )
            )
    for op, spec in outputs:
        findings += _shape_findings(op.type, spec)
        boundary_cast = op.type == "cast" and spec.name in block_outputs
        if precision == "fp16" and spec.dtype == "FLOAT32" and not boundary_cast:
            findings.append(
                Finding(
                    "error",
                    "fp32",
                    op.type,
                    spec.name,
                    "fp32 op in an fp16 program; the ANE computes in fp16 only",
                )
            )
    if precision == "fp32":
        findings.append(
            Finding(
                "warning",
                "precision",
                "program",
                prog.source,
                "fp32 program: the ANE runs fp16 only, so Core ML runs it on the CPU/GPU",
            )
        )
    return LintReport(
        source=prog.source,
        precision=precision,
        histogram=histogram,
        errors=[f for f in findings if f.severity == "error"],
        warnings=[f for f in findings if f.severity == "warning"],
    )
