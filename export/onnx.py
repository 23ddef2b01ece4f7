"""ONNX export through PyTorch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`).

    to_onnx(model, (x_t, t, first_frame, motion), "out/model.onnx")

Graph inputs carry the names of the forward's arguments, in order; the file (and its
external data file, when the weights go there) is written atomically.
"""

from __future__ import annotations

import inspect
import numbers
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from export.files import TEMP_SUFFIX, temp_prefix

# The dynamo exporter's lowest supported opset.
MIN_OPSET = 18

# onnxscript's rule that merges two Slices of one value into a Split. Its two-output pattern
# is matched by scanning the whole graph from every node: on a mobilei2v model (~4,200
# nodes) that is 20 s per pass, two passes, for a rule that finds nothing to rewrite there.
SLICES_SPLIT = "SlicesSplit"

# Saved and run at this level: EXTENDED fuses what is portable (Gemm, FusedMatMul, layer
# norm, GELU); ALL adds layout transformations tuned to the CPU that builds the session.
GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"


# How an exported graph spells softmax attention (torch's scaled_dot_product_attention):
# "onnx", the exporter's own form, which every ONNX runtime reads (below opset 23 MatMul,
# Softmax, MatMul; at 23 one Attention node); "onnxruntime", onnxruntime's contrib op
# com.microsoft.MultiHeadAttention, which has a CPU kernel of its own and which only
# onnxruntime reads (bench.onnx_softmax times the forms against each other).
ATTENTION_FORMS = ("onnx", "onnxruntime")
# Each form in words, for reports and the command line.
ATTENTION_WORDS = {
    "onnx": "the exporter's standard ops",
    "onnxruntime": "com.microsoft.MultiHeadAttention",
}
ORT_DOMAIN = "com.microsoft"


# Session config entry: the session takes its CPU memory from the process-wide arena
# registered with onnxruntime's environment (share_arena) rather than from an arena of its
# own.
ENV_ARENA_KEY = "session.use_env_allocators"
_env_arena = False


def share_arena() -> None:
    """Registers one CPU arena allocator with onnxruntime's environment (once per process),
    for sessions made with `session(..., shared_arena=True)`."""
    global _env_arena
    if _env_arena:
        return
    import onnxruntime as ort

    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    ort.create_and_register_allocator(info, None)  # None: onnxruntime's default arena config
    _env_arena = True


def session(path: str | os.PathLike, threads: int | None = None, shared_arena: bool = True):
    """The one way this project makes an onnxruntime CPU session (study, export, bench and
    tests all call it), configured like torch so the two are timed alike:

    - intra-op threads = `threads`, default torch.get_num_threads() (ORT's own default is
      every core, torch's may be fewer);
    - inter-op threads 1 and sequential execution (torch runs one op at a time too);
    - `session.intra_op.allow_spinning` = 0: idle ORT threads otherwise spin and slow
      whatever else runs in the process (torch ops after `run()`, onnxruntime issue 13808);
    - graph optimisation level GRAPH_OPTIMIZATION (ORT_ENABLE_ALL), stated in
      `session_options(...)` and in every table that times a session;
    - `shared_arena` (default True): activations come from one arena that all such
      sessions of the process share (share_arena), not from an arena per session
      (onnxruntime's default, `shared_arena=False`). An arena keeps what its largest run
      took; sessions that run one at a time can reuse one arena, which grows only when a
      run needs a bigger block than it holds, where an arena per session keeps each
      session's own. That is what lets bench.latency hold many whole-model sessions side
      by side. bench/ab_ort_arena.py times both kinds of session: the same within noise
      by their medians on one 2-core machine (README, the paragraph on onnxruntime's arena).
    """
    import onnxruntime as ort

    if threads is None:
        threads = torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION)
    if not isinstance(shared_arena, bool):
        raise ValueError(f"shared_arena must be a bool, got {shared_arena!r}")
    if shared_arena:
        share_arena()
        opts.add_session_config_entry(ENV_ARENA_KEY, "1")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def session_options(sess) -> dict:
    """What a table that times `sess` records about it."""
    opts = sess.get_session_options()
    return {
        "intra_op_threads": opts.intra_op_num_threads,
        "inter_op_threads": opts.inter_op_num_threads,
        "allow_spinning": opts.get_session_config_entry("session.intra_op.allow_spinning"),
        "graph_optimization": GRAPH_OPTIMIZATION,
        "shared_arena": _config_entry(opts, ENV_ARENA_KEY) == "1",
    }


def _config_entry(opts, key: str) -> str | None:
    """A session config entry, None where it was never set (onnxruntime raises then)."""
    try:
        return opts.get_session_config_entry(key)
    except RuntimeError:
        return None


def _ort_mha_op():
    """onnxscript's handle on com.microsoft.MultiHeadAttention (version 1). onnxscript
    builds a node only from a registered schema and onnx ships none for onnxruntime's
    contrib ops, so the inputs and attributes used here (query, key, value; num_heads,
    scale) are registered with onnx's schema registry once per process, where no schema
    of that name is registered yet."""
    from onnx import defs
    from onnxscript.values import Opset

    if not defs.has("MultiHeadAttention", ORT_DOMAIN):
        param = defs.OpSchema.FormalParameter
        attr = defs.OpSchema.Attribute
        defs.register_schema(
            defs.OpSchema(
                "MultiHeadAttention",
                ORT_DOMAIN,
                1,
                inputs=[param("query", "T"), param("key", "T"), param("value", "T")],
                outputs=[param("output", "T")],
                type_constraints=[("T", ["tensor(float)"], "")],
                attributes=[
                    attr("num_heads", defs.OpSchema.AttrType.INT, "", required=True),
                    attr("scale", defs.OpSchema.AttrType.FLOAT, "", required=False),
                ],
            )
        )
    return Opset(ORT_DOMAIN, 1).MultiHeadAttention


def sdpa_as_ort_mha(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                    scale=None, enable_gqa=False):  # fmt: skip
    """The exporter's translation of aten.scaled_dot_product_attention for
    attention="onnxruntime": (B, H, N, D) query, key and value packed to (B, N, H * D), one
    com.microsoft.MultiHeadAttention node, and back. The zoo's fast paths transpose
    (B, N, H, D) projections to (B, H, N, D) before SDPA, so the packing Transposes cancel
    against theirs when the graph is optimised. A call that op does not compute as SDPA
    would (a mask, dropout, causal, fewer key heads than query heads, a dynamic shape)
    gets the exporter's own translation instead (onnxscript's torch_lib), so the graph is
    right either way."""
    import math

    from onnxscript import opset18 as op

    shapes = [tuple(t.shape) if t.shape is not None else None for t in (query, key, value)]
    static = all(
        s is not None and len(s) == 4 and all(isinstance(d, int) for d in s) for s in shapes
    )
    if (
        attn_mask is not None
        or dropout_p != 0
        or is_causal
        or not static
        or not shapes[0][1] == shapes[1][1] == shapes[2][1]
    ):
        from onnxscript.function_libs.torch_lib.ops.nn import aten_scaled_dot_product_attention

        return aten_scaled_dot_product_attention(
            query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa
        )
    heads, head_dim = shapes[0][1], shapes[0][3]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    packed_shape = op.Constant(value_ints=[0, 0, -1])

    def packed(x):  # (B, H, N, D) -> (B, N, H * D)
        return op.Reshape(op.Transpose(x, perm=[0, 2, 1, 3]), packed_shape)

    out = _ort_mha_op()(packed(query), packed(key), packed(value), num_heads=heads, scale=scale)
    out = op.Reshape(out, op.Constant(value_ints=[0, 0, heads, -1]))  # (B, N, H, Dv)
    return op.Transpose(out, perm=[0, 2, 1, 3])


def input_names(model: nn.Module, count: int) -> list[str]:
    """Names of the first `count` positional arguments of model.forward."""
    params = [
        p
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if count > len(params):
        raise ValueError(
            f"example_inputs has {count} tensors but {type(model).__name__}.forward takes "
            f"{len(params)} positional arguments ({', '.join(p.name for p in params)})"
        )
    return [p.name for p in params[:count]]


def _slice_pairs(graph) -> bool:
    """Whether SlicesSplit could match in `graph`. Its pattern is two 4-input Slice nodes
    (data, starts, ends, axes; no steps) on one value, and its check wants both cut the
    last axis; so a value can only match when two of the Slices it feeds as data have at
    most 4 inputs and axes not known to be another axis. A node holding a subgraph (not
    looked into) counts as a possible match."""

    def candidate(node, value) -> bool:
        if node.op_type != "Slice" or node.inputs[0] is not value or len(node.inputs) > 4:
            return False
        axes = node.inputs[3] if len(node.inputs) == 4 else None
        const = None if axes is None else axes.const_value
        if const is None or value.shape is None:
            return True
        rank = len(value.shape)
        return const.numpy().tolist() in ([-1], [rank - 1])

    values = [*graph.inputs, *graph.initializers.values()]
    for node in graph:
        if any(a.type.name in ("GRAPH", "GRAPHS") for a in node.attributes.values()):
            return True
        values.extend(node.outputs)
    return any(sum(candidate(user, v) for user, _ in v.uses()) > 1 for v in values)


def optimize(model) -> int:
    """The optimisation torch.onnx.export(..., optimize=True) runs (onnxscript's
    `optimize_ir`, then its ONNX fusions), in place on an onnx_ir model, with one change: a
    rewrite pass leaves out the SlicesSplit rule (SLICES_SPLIT) when the graph, at that
    pass's start, has no value feeding two Slices, its only possible match. The result is
    the graph the exporter's own optimisation gives (tests/test_onnx.py compares them), in
    seconds instead of a minute for a whole mobilei2v model. Returns how many rewrite passes
    left the rule out, or -1 where this onnxscript lacks the (private) pieces used here and
    the exporter's own optimisation ran instead."""
    try:
        import onnx_ir as ir
        import onnx_ir.passes.common as common
        from onnxscript import rewriter
        from onnxscript.optimizer import _constant_folding as folding
        from onnxscript.rewriter import onnx_fusions

        rules = list(rewriter._DEFAULT_REWRITE_RULES)
        folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT  # noqa: B018 (present, or fall back)
    except (ImportError, AttributeError):
        from onnxscript._framework_apis.torch_2_8 import optimize as exporter_optimize

        exporter_optimize(model)
        return -1
    every = rewriter.RewritePass(rules)
    rest = rewriter.RewritePass([r for r in rules if getattr(r, "name", "") != SLICES_SPLIT])
    skipped = 0

    class Rewrite(ir.passes.InPlacePass):
        def call(self, model):
            nonlocal skipped
            if _slice_pairs(model.graph):
                return every(model)
            skipped += 1
            return rest(model)

    ir.passes.Sequential(
        common.InlinePass(),
        ir.passes.PassManager(
            [
                folding.FoldConstantsPass(
                    shape_inference=True,
                    input_size_limit=folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                    output_size_limit=folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
                    should_fold=lambda node: None,
                ),
                Rewrite(),
                common.RemoveUnusedNodesPass(),
                common.RemoveUnusedFunctionsPass(),
                common.RemoveUnusedOpsetsPass(),
            ],
            steps=2,
            early_stop=True,
        ),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.LiftSubgraphInitializersToMainGraphPass(),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.OutputFixPass(),
        common.NameFixPass(),
    )(model)
    onnx_fusions.fuse(model)
    return skipped


def _check_args(model, example_inputs, path, opset) -> tuple[tuple, Path, int | None]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError(
            "example_inputs must be a non-empty tuple of tensors in forward-argument order, "
            f"got {type(example_inputs).__name__}"
        )
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"example_inputs[{i}] must be a torch.Tensor (graph inputs are tensors), "
                f"got {type(x).__name__}"
            )
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path must end in .onnx, got {str(path)!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path's folder does not exist: {str(path.parent)!r}")
    if opset is not None:
        if isinstance(opset, bool) or not isinstance(opset, numbers.Integral):
            raise TypeError(f"opset must be an int or None, got {type(opset).__name__}")
        if opset < MIN_OPSET:
            raise ValueError(f"opset must be >= {MIN_OPSET} (dynamo exporter), got {opset}")
        opset = int(opset)
    return tuple(example_inputs), path, opset


def to_onnx(
    model: nn.Module,
    example_inputs,
    path: str | os.PathLike,
    opset: int | None = None,
    *,
    external_data: bool | None = None,
    attention: str = "onnx",
) -> Path:
    """Exports `model` to ONNX with static shapes taken from `example_inputs`.

    Args:
        model: the module to export (put in eval mode here; restored afterwards).
        example_inputs: tensors in the order of model.forward's arguments; graph inputs are
            named after those arguments. The single output is named "output".
        path: destination, ending in .onnx.
        opset: ONNX opset (>= 18); None takes the exporter's default.
        external_data: put the weights in a file beside the model, referenced by its bare
            name (`<path>.data`): True, False, or None for "when the model would pass
            protobuf's 2 GB limit".
        attention: how softmax attention (SDPA) is spelled, one of ATTENTION_FORMS:
            "onnx" (default), the exporter's own standard ops, or "onnxruntime", one
            com.microsoft.MultiHeadAttention node per SDPA call that op computes, which
            only onnxruntime runs (sdpa_as_ort_mha).
    Returns:
        The written path.
    """
    example_inputs, path, opset = _check_args(model, example_inputs, path, opset)
    if external_data is not None and not isinstance(external_data, bool):
        raise TypeError(f"external_data must be a bool or None, got {external_data!r}")
    if attention not in ATTENTION_FORMS:
        raise ValueError(f"attention must be one of {ATTENTION_FORMS}, got {attention!r}")
    table = None
    if attention == "onnxruntime":
        table = {torch.ops.aten.scaled_dot_product_attention.default: sdpa_as_ort_mha}
    names = input_names(model, len(example_inputs))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model,
                example_inputs,
                dynamo=True,
                optimize=False,  # optimize() below: the same graph, faster
                input_names=names,
                output_names=["output"],
                opset_version=opset,
                custom_translation_table=table,
                verbose=False,
            )
    except Exception as e:
        # The exporter wraps everything the traced forward raises; a model that rejects
        # example_inputs (ValueError / TypeError naming the argument) says so directly.
        cause = e.__cause__
        if isinstance(cause, (ValueError, TypeError)) and not isinstance(e, type(cause)):
            raise type(cause)(f"example_inputs rejected by the model: {cause}") from e
        raise
    finally:
        model.train(was_training)
    optimize(program.model)
    # Save under the final file name inside a private folder next to the destination, so
    # any external data file records the final name; then move the files into place, the
    # .onnx last, each with an atomic rename.
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        program.save(tmp / path.name, external_data=external_data)
        files = sorted(tmp.iterdir(), key=lambda f: f.name == path.name)
        for f in files:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
