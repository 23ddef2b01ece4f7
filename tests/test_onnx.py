"""export.to_onnx: the dynamo exporter's graph run by onnxruntime equals PyTorch (fp32),
inputs are named and ordered like the forward's arguments, files are written atomically."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
import torch

import attention_zoo as az
from export import to_onnx
from export.onnx import session, session_options
from hybrid_dit import PRESETS, HybridDiT


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


NAMES = ("x_t", "t", "first_frame", "motion")


def tiny_model(pattern: str, patch: int = 1) -> HybridDiT:
    torch.manual_seed(0)
    model = HybridDiT(PRESETS["tiny"].replace(patch_size=patch, attention=pattern)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def example(model: HybridDiT, t: int, h: int, w: int):
    gen = torch.Generator().manual_seed(3)
    c = model.cfg.in_channels
    return (
        torch.randn(1, c, t, h, w, generator=gen),
        torch.rand(1, generator=gen),
        torch.randn(1, c, h, w, generator=gen),
        torch.rand(1, generator=gen),
    )


@pytest.mark.parametrize(
    "pattern,patch,thw",
    [("L,S", 1, (3, 5, 7)), ("softmax_frame,performer", 2, (2, 6, 10))],
    ids=["hybrid-p1-3x5x7", "frame-performer-p2-2x6x10"],
)
def test_onnxruntime_matches_pytorch(tmp_path, pattern, patch, thw):
    model = tiny_model(pattern, patch)
    args = example(model, *thw)
    path = to_onnx(model, args, tmp_path / "tiny.onnx")
    graph = onnx.load(str(path)).graph
    names = list(NAMES)
    assert [i.name for i in graph.input] == names
    # atomic write: only the model file is left, no temporary folder or file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]
    sess = session(path)
    (out,) = sess.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})
    with torch.no_grad():
        ref = model(*args).numpy()
    assert out.shape == ref.shape
    assert rel_err(out, ref) < 1e-4


def test_external_data_lands_beside_the_model(tmp_path):
    model = tiny_model("L,S")
    args = example(model, 2, 3, 5)
    path = to_onnx(model, args, tmp_path / "ext.onnx", external_data=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ext.onnx", "ext.onnx.data"]
    locations = {
        e.value
        for init in onnx.load(str(path), load_external_data=False).graph.initializer
        for e in init.external_data
        if e.key == "location"
    }
    assert locations == {"ext.onnx.data"}  # a bare name: the pair can be moved together
    sess = session(path)
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
    with torch.no_grad():
        assert rel_err(sess.run(None, feeds)[0], model(*args).numpy()) < 1e-4


def test_to_onnx_validates_its_arguments(tmp_path):
    model = tiny_model("L,S")
    args = example(model, 2, 3, 3)
    with pytest.raises(ValueError, match=r"path must end in \.onnx"):
        to_onnx(model, args, tmp_path / "m.pb")
    with pytest.raises(FileNotFoundError, match="folder does not exist"):
        to_onnx(model, args, tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match=r"example_inputs\[1\] must be a torch.Tensor"):
        to_onnx(model, (args[0], 0.5), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="example_inputs has 5 tensors"):
        to_onnx(model, (*args, args[1]), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset must be >= 18"):
        to_onnx(model, args, tmp_path / "m.onnx", opset=13)
    with pytest.raises(TypeError, match="external_data must be a bool"):
        to_onnx(model, args, tmp_path / "m.onnx", external_data="yes")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        to_onnx(lambda x: x, args, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_command_writes_onnx_and_reports_parity(tmp_path, capsys):
    from mobileattn.cli import main

    out = tmp_path / "exp"
    argv = ["export", "--preset", "tiny", "--attention", "S,L", "--grid", "2x3x5"]
    code = main([*argv, "--out", str(out), "--no-coreml", "--repeats", "1"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert (out / "model.onnx").is_file() and (out / "export.json").is_file()
    assert "onnxruntime vs torch (fp32)" in text and ": ok" in text
    assert "Core ML: skipped (--no-coreml)" in text


def test_export_command_writes_the_onnxruntime_form_on_request(tmp_path, capsys):
    """--onnx-attention onnxruntime: model.onnx carries MultiHeadAttention, still matches
    torch under onnxruntime, and the bundle records the form; an unknown form is refused."""
    from mobileattn.cli import main

    out = tmp_path / "exp"
    argv = ["export", "--preset", "tiny", "--attention", "S,L", "--grid", "2x3x5", "--no-coreml"]
    code = main([*argv, "--out", str(out), "--repeats", "1", "--onnx-attention", "onnxruntime"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "(softmax attention as com.microsoft.MultiHeadAttention)" in text and ": ok" in text
    assert "MultiHeadAttention" in _op_types(onnx.load(str(out / "model.onnx")))
    doc = json.loads((out / "bundle.json").read_text())
    assert doc["onnx"]["attention"] == "onnxruntime" and doc["onnx"]["ok"]
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "x"), "--onnx-attention", "ort"])
    assert "--onnx-attention: invalid choice: 'ort'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--grid", "3x5", "--grid must be TxHxW"),
        ("--attention", "L*3", "--attention: .*one variant per block"),
        ("--preset", "huge", "--preset must be one of"),
    ],
)
def test_export_command_rejects_bad_arguments(tmp_path, capsys, flag, value, message):
    from mobileattn.cli import main

    args = {"--preset": "tiny", "--grid": "2x3x5", "--attention": "L,S"}
    args[flag] = value
    argv = ["export", "--out", str(tmp_path / "x")]
    for k, v in args.items():
        argv += [k, v]
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)


def _op_types(model_proto) -> set[str]:
    """Every op type in the graph and in its local functions (the dynamo exporter may nest)."""
    ops = {n.op_type for n in model_proto.graph.node}
    for f in model_proto.functions:
        ops |= {n.op_type for n in f.node}
    return ops


def test_exported_linear_attention_runs_as_matmuls_without_einsum(tmp_path):
    """onnxruntime's CPU Einsum transposes its inputs (onnxruntime issue 5897): the linear
    forms export as MatMul with the key state padded by the key sums, softmax as
    MatMul-Softmax-MatMul."""
    for pattern, must in (("relu_linear", "MatMul"), ("softmax", "Softmax")):
        model = tiny_model(pattern)
        args = example(model, 2, 3, 4)
        path = to_onnx(model, args, tmp_path / f"{pattern}.onnx")
        ops = _op_types(onnx.load(str(path)))
        assert "Einsum" not in ops, (pattern, sorted(ops))
        assert must in ops, (pattern, sorted(ops))
        sess = session(path)
        feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
        with torch.no_grad():
            assert rel_err(sess.run(None, feeds)[0], model(*args).numpy()) < 1e-4


@pytest.mark.parametrize("variant", [v for v in az.VARIANTS if az.get(v).kind == "linear"])
def test_exported_linear_attention_writes_no_view_in_place(tmp_path, variant):
    """The fast paths' in-place steps are eager-only (attention_zoo._common.inplace_ok): a
    tracer turns an in-place write into a view (the division into the padded GEMM's
    output) into a scatter, which ONNX spells ScatterND between full-size Transposes."""
    model = tiny_model(variant)
    args = example(model, 2, 3, 4)
    path = to_onnx(model, args, tmp_path / f"{variant}.onnx")
    ops = _op_types(onnx.load(str(path)))
    assert not {"ScatterND", "ScatterElements", "Einsum"} & ops, (variant, sorted(ops))
    sess = session(path)
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
    with torch.no_grad():
        assert rel_err(sess.run(None, feeds)[0], model(*args).numpy()) < 1e-4


def test_in_place_shortcuts_are_eager_only():
    from attention_zoo._common import inplace_ok

    x = torch.ones(2, requires_grad=True)
    assert inplace_ok(torch.ones(2)) and not inplace_ok(x)
    with torch.no_grad():
        assert inplace_ok(x)
    seen = []

    def f(t):
        seen.append(inplace_ok(t))
        return t + 1

    torch.jit.trace(f, torch.ones(2), check_trace=False)
    assert seen == [False]


def _unoptimized(module, args):
    with torch.no_grad():
        return torch.onnx.export(module, args, dynamo=True, optimize=False, verbose=False).model


def _same_graph(a, b) -> bool:
    import onnx_ir as ir

    return ir.serde.serialize_model(a).graph == ir.serde.serialize_model(b).graph


def test_our_optimisation_gives_the_exporters_graph_for_every_variant():
    """export.onnx.optimize leaves out SlicesSplit only where it cannot match: the graph
    must be the one torch.onnx.export(optimize=True) would write, node for node."""
    from onnxscript._framework_apis.torch_2_8 import optimize as exporter_optimize

    from attention_zoo.registry import VARIANTS
    from export.onnx import optimize

    torch.manual_seed(0)
    cfg = PRESETS["tiny"].replace(depth=len(VARIANTS), attention=",".join(sorted(VARIANTS)))
    model = HybridDiT(cfg).eval()
    args = example(model, 2, 4, 6)
    ours, theirs = _unoptimized(model, args), _unoptimized(model, args)
    skipped = optimize(ours)
    exporter_optimize(theirs)
    assert skipped >= 1  # the fast path ran, at least one pass without the rule
    assert _same_graph(ours, theirs)


def test_our_optimisation_keeps_slicessplit_where_it_applies():
    """Two 4-input Slices cutting the last axis of one value (built by hand: the dynamo
    exporter writes Slices with steps, which the rule never matches): the rule must still
    run and make a Split, so the fast path cannot change what the exporter would write."""
    import onnx_ir as ir
    from onnx import TensorProto, helper
    from onnxscript._framework_apis.torch_2_8 import optimize as exporter_optimize

    from export.onnx import optimize

    def graph():
        ints = {
            n: helper.make_tensor(n, TensorProto.INT64, [1], [v])
            for n, v in (("zero", 0), ("three", 3), ("six", 6), ("last", -1))
        }
        nodes = [  # in this order: onnxscript 0.7's matcher finds the pair only so
            helper.make_node("Slice", ["x", "three", "six", "last"], ["b"]),
            helper.make_node("Slice", ["x", "zero", "three", "last"], ["a"]),
            helper.make_node("Add", ["a", "b"], ["y"]),
        ]
        g = helper.make_graph(
            nodes,
            "halves",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
            initializer=list(ints.values()),
        )
        return ir.serde.deserialize_model(
            helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
        )

    ours, theirs = graph(), graph()
    optimize(ours)
    exporter_optimize(theirs)
    assert "Split" in {n.op_type for n in theirs.graph}  # the rule applies here
    assert "Split" in {n.op_type for n in ours.graph}
    assert _same_graph(ours, theirs)


def test_the_one_session_helper_matches_torch_and_stops_spinning(tmp_path):
    model = tiny_model("L,S")
    path = to_onnx(model, example(model, 2, 3, 4), tmp_path / "m.onnx")
    opts = session_options(session(path))
    assert opts["intra_op_threads"] == torch.get_num_threads()
    assert opts["inter_op_threads"] == 1 and opts["allow_spinning"] == "0"
    assert session_options(session(path, threads=1))["intra_op_threads"] == 1
    with pytest.raises(ValueError, match="threads must be a positive int"):
        session(path, threads=0)


def test_sessions_on_the_shared_arena_run_like_sessions_with_their_own(tmp_path, monkeypatch):
    """shared_arena (the default): the process registers one arena with onnxruntime, once,
    and two models' sessions take their activations from it; each still computes what a
    session with an arena of its own computes."""
    import onnxruntime as ort

    import export.onnx as eo

    registered = []
    real = ort.create_and_register_allocator

    def spy(*args):
        registered.append(args)
        return real(*args)

    monkeypatch.setattr(ort, "create_and_register_allocator", spy)
    monkeypatch.setattr(eo, "_env_arena", False)  # as in a fresh process
    outs = {}
    for pattern in ("L,S", "S,S"):
        model = tiny_model(pattern)
        inputs = example(model, 2, 3, 4)
        path = to_onnx(model, inputs, tmp_path / f"{pattern.replace(',', '')}.onnx")
        feed = {n: i.numpy() for n, i in zip(NAMES, inputs, strict=True)}
        before = len(registered)
        own = session(path, shared_arena=False)
        assert len(registered) == before  # an arena of its own registers nothing
        shared = session(path)
        assert not session_options(own)["shared_arena"]
        assert session_options(shared)["shared_arena"]
        outs[pattern] = (own, shared, feed)
    assert len(registered) == 1 and eo._env_arena  # once, for both models' sessions
    for own, shared, feed in outs.values():  # interleaved: the arena serves both models
        expected = own.run(None, feed)[0]
        got = shared.run(None, feed)[0]
        assert np.isfinite(expected).all()
        assert rel_err(got, expected) < 1e-6  # same kernels, other buffers
    with pytest.raises(ValueError, match="shared_arena must be a bool"):
        session(path, shared_arena=1)


def test_no_code_makes_an_onnxruntime_session_but_the_helper():
    """Study, export, bench and tests all go through export.onnx.session."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for pkg in (
        "attention_zoo",
        "kernels",
        "hybrid_dit",
        "export",
        "bench",
        "study",
        "mobileattn",
        "tests",
    ):
        for f in (root / pkg).rglob("*.py"):
            if f.name == "onnx.py" and f.parent.name == "export":
                continue
            if f.name == "test_onnx.py":  # this check's own source names the class
                continue
            if "InferenceSession(" in f.read_text():
                offenders.append(str(f.relative_to(root)))
    assert not offenders, offenders


class _Sdpa(torch.nn.Module):
    """SDPA with fixed options; a mask, when given, is the fourth input."""

    def __init__(self, **opts):
        super().__init__()
        self.opts = opts

    def forward(self, q, k, v, mask=None):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, **self.opts
        )


def test_onnxruntime_attention_form_is_one_multiheadattention_node_held_to_the_rule(tmp_path):
    """to_onnx(attention="onnxruntime"): SDPA becomes com.microsoft.MultiHeadAttention, no
    Softmax left, and onnxruntime's result is held to the FlashAttention rule: its error
    against the float64 reference at most 2x that of plain PyTorch in fp32."""
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 40, 8, generator=gen) for _ in range(3))
    path = to_onnx(_Sdpa(scale=0.3), (q, k, v), tmp_path / "mha.onnx", attention="onnxruntime")
    proto = onnx.load(str(path))
    mha = [n for n in proto.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(mha) == 1 and mha[0].domain == "com.microsoft"
    assert "Softmax" not in _op_types(proto)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in mha[0].attribute}
    assert attrs["num_heads"] == 3 and attrs["scale"] == pytest.approx(0.3)
    (out,) = session(path).run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})
    softmax = az.get("softmax")
    ref = softmax.reference(q.double(), k.double(), v.double(), scale=0.3)
    plain = (softmax.reference(q, k, v, scale=0.3).double() - ref).abs().max()
    assert (torch.from_numpy(out).double() - ref).abs().max() <= 2 * plain


def test_onnxruntime_attention_form_in_a_model_matches_torch_and_drops_transposes(tmp_path):
    """In the DiT (softmax and per-frame softmax blocks) the form runs under onnxruntime
    like PyTorch, and onnxruntime's graph needs fewer Transposes than the default form's."""
    model = tiny_model("softmax,softmax_frame")
    args = example(model, 2, 3, 4)
    ops = {}
    for form in ("onnx", "onnxruntime"):
        path = to_onnx(model, args, tmp_path / f"{form}.onnx", attention=form)
        proto = onnx.load(str(path))
        ops[form] = [n.op_type for n in proto.graph.node]
        sess = session(path)
        feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
        with torch.no_grad():
            assert rel_err(sess.run(None, feeds)[0], model(*args).numpy()) < 1e-4, form
    assert ops["onnxruntime"].count("MultiHeadAttention") == 2
    assert "MultiHeadAttention" not in ops["onnx"] and "Softmax" in ops["onnx"]
    assert ops["onnxruntime"].count("Transpose") < ops["onnx"].count("Transpose")


def _fallback_case(case: str, gen):
    """(module, inputs) of an SDPA call MultiHeadAttention cannot compute as SDPA would."""
    q = torch.randn(1, 2, 6, 4, generator=gen)
    kv_heads, kv_len = (1, 5) if case == "gqa" else (2, 6 if case == "causal" else 5)
    k, v = (torch.randn(1, kv_heads, kv_len, 4, generator=gen) for _ in range(2))
    if case == "causal":
        return _Sdpa(is_causal=True), (q, k, v)
    if case == "gqa":
        return _Sdpa(enable_gqa=True), (q, k, v)
    bool_mask = case == "bool-mask"
    mask = torch.rand(6, 5, generator=gen) > 0.3 if bool_mask else torch.randn(6, 5, generator=gen)
    return _Sdpa(), (q, k, v, mask)


@pytest.mark.parametrize("case", ["causal", "bool-mask", "float-mask", "gqa"])
def test_onnxruntime_attention_form_falls_back_where_its_op_does_not_apply(tmp_path, case):
    """SDPA calls MultiHeadAttention cannot compute as SDPA would (a mask, causal, fewer
    key heads) keep the exporter's own form, and run like PyTorch; a bad form is refused."""
    module, args = _fallback_case(case, torch.Generator().manual_seed(6))
    path = to_onnx(module, args, tmp_path / "m.onnx", attention="onnxruntime")
    ops = _op_types(onnx.load(str(path)))
    assert "MultiHeadAttention" not in ops and "Softmax" in ops
    sess = session(path)
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
    with torch.no_grad():
        assert rel_err(sess.run(None, feeds)[0], module(*args).numpy()) < 1e-5
    with pytest.raises(ValueError, match=r"attention must be one of \('onnx', 'onnxruntime'\)"):
        to_onnx(module, args, tmp_path / "n.onnx", attention="ort")


def test_onnxruntime_latency_tables_time_the_multiheadattention_form(tmp_path):
    """bench.latency exports what it times on onnxruntime with ORT_ATTENTION, the form that
    measured fastest there (bench.onnx_softmax), and its runtime info says so."""
    from bench.latency import ORT_ATTENTION, make_runner, runtime_info

    assert ORT_ATTENTION == "onnxruntime"
    model = tiny_model("softmax")
    args = example(model, 2, 3, 4)
    run = make_runner(model, args, "onnxruntime-cpu", tmp_path)
    (path,) = tmp_path.glob("*.onnx")
    assert "MultiHeadAttention" in _op_types(onnx.load(str(path)))
    with torch.no_grad():
        assert rel_err(run()[0], model(*args).numpy()) < 1e-4
    assert runtime_info("onnxruntime-cpu")["attention"] == ORT_ATTENTION
