"""Bad input to the zoo gets a clear error that names the argument and what came."""

from __future__ import annotations

import pytest
import torch

import attention_zoo as az
from tests.helpers import make_qkv


def _qkv(**over):
    q, k, v = make_qkv(2, 3, 12, 8)
    d = {"q": q, "k": k, "v": v}
    d.update(over)
    return d


# (case id, variant, tensors, options, exception type, message pattern)
CASES = [
    ("rank3-q", "softmax", _qkv(q=torch.randn(3, 12, 8)), {}, ValueError, r"q must have rank 4"),
    ("rank5-v", "relu_linear", _qkv(v=torch.randn(2, 3, 12, 8, 1)), {}, ValueError, r"v must have rank 4"),
    ("not-a-tensor", "softmax", _qkv(k=[[1.0]]), {}, TypeError, r"k must be a torch.Tensor, got list"),
    ("int-dtype", "softmax", _qkv(q=torch.ones(2, 3, 12, 8, dtype=torch.int64)), {}, TypeError, r"q must have a floating dtype.*int64"),
    ("bool-dtype", "elu_linear", _qkv(v=torch.ones(2, 3, 12, 8, dtype=torch.bool)), {}, TypeError, r"v must have a floating dtype"),
    ("mixed-dtype", "softmax", _qkv(k=torch.randn(2, 3, 12, 8, dtype=torch.float64)), {}, TypeError, r"k must have q's dtype torch.float32, got torch.float64"),
    ("other-device", "relu_linear", _qkv(v=torch.randn(2, 3, 12, 8, device="meta")), {}, ValueError, r"v must be on q's device cpu, got meta"),
    ("head-dim", "softmax", _qkv(k=torch.randn(2, 3, 12, 9)), {}, ValueError, r"k's head dim must equal q's \(8\)"),
    ("batch", "cosformer", _qkv(k=torch.randn(1, 3, 12, 8)), {}, ValueError, r"share batch and heads"),
    ("heads", "performer", _qkv(v=torch.randn(2, 4, 12, 8)), {}, ValueError, r"share batch and heads"),
    ("kv-length", "softmax", _qkv(v=torch.randn(2, 3, 11, 8)), {}, ValueError, r"v's sequence length must equal k's \(12\)"),
    ("n-zero", "relu_linear", _qkv(q=torch.randn(2, 3, 0, 8)), {}, ValueError, r"q must have no empty dimension"),
    ("n-zero-kv", "softmax", _qkv(k=torch.randn(2, 3, 0, 8), v=torch.randn(2, 3, 0, 8)), {}, ValueError, r"k must have no empty dimension"),
    ("d-zero", "softmax", _qkv(q=torch.randn(2, 3, 12, 0), k=torch.randn(2, 3, 12, 0)), {}, ValueError, r"no empty dimension"),
    ("negative-eps", "relu_linear", _qkv(), {"eps": -1e-6}, ValueError, r"eps must be >= 0, got -1e-06"),
    ("nan-eps", "elu_linear", _qkv(), {"eps": float("nan")}, ValueError, r"eps must be finite"),
    ("str-eps", "focused_linear", _qkv(), {"eps": "1e-6"}, TypeError, r"eps must be a real number, got str"),
    ("zero-scale", "softmax", _qkv(), {"scale": 0.0}, ValueError, r"scale must be > 0"),
    ("unknown-option", "softmax", _qkv(), {"eps": 1e-6}, ValueError, r"does not take option\(s\) eps; it accepts: scale, chunk"),
    ("grid-missing", "softmax_frame", _qkv(), {}, ValueError, r"needs option grid="),
    ("grid-product", "softmax_frame", _qkv(), {"grid": (2, 2, 2)}, ValueError, r"grid \(2, 2, 2\) holds 8 tokens but the sequence has N=12"),
    ("grid-shape", "softmax_frame", _qkv(), {"grid": (3, 4)}, ValueError, r"grid must be a \(T, H, W\) tuple"),
    ("grid-negative", "softmax_frame", _qkv(), {"grid": (-3, -4, 1)}, ValueError, r"grid must hold positive ints"),
    ("grid-float", "softmax_frame", _qkv(), {"grid": (3, 4.0, 1)}, TypeError, r"grid must be an int"),
    ("frame-cross-length", "softmax_frame", _qkv(k=torch.randn(2, 3, 6, 8), v=torch.randn(2, 3, 6, 8)), {"grid": (3, 2, 2)}, ValueError, r"as many queries as keys"),
    ("p-small", "focused_linear", _qkv(), {"p": 0.5}, ValueError, r"p \(focusing power\) must be >= 1"),
    ("features-zero", "performer", _qkv(), {"features": 0}, ValueError, r"features must be >= 1"),
    ("seed-negative", "performer", _qkv(), {"seed": -1}, ValueError, r"seed must be >= 0"),
    ("features-float", "performer", _qkv(), {"features": 12.5}, TypeError, r"features must be an int"),
    ("bias-inf", "sigmoid", _qkv(), {"bias": float("-inf")}, ValueError, r"bias must be finite"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "tensors", "opts", "exc", "match"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_input_names_the_argument(variant, tensors, opts, exc, match):
    with pytest.raises(exc, match=match):
        az.attention(tensors["q"], tensors["k"], tensors["v"], variant=variant, **opts)


def test_unknown_variant_lists_known_names():
    with pytest.raises(
        KeyError, match=r"unknown attention variant 'flash'; known variants: .*relu_linear.*softmax"
    ):
        az.get("flash")
    q, k, v = make_qkv(1, 1, 4, 4)
    with pytest.raises(KeyError, match=r"known variants"):
        az.attention(q, k, v, variant="linear")


def test_unknown_impl():
    q, k, v = make_qkv(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"impl must be one of .*'auto'.*got 'cuda'"):
        az.attention(q, k, v, variant="softmax", impl="cuda")


@pytest.mark.parametrize(("arg", "val"), [("B", 0), ("H", -1), ("N", 0), ("D", 2.5), ("N", True)])
def test_counts_reject_bad_sizes(arg, val):
    sizes = {"B": 1, "H": 16, "N": 2760, "D": 72}
    sizes[arg] = val
    with pytest.raises(ValueError, match=rf"{arg} must be a positive int"):
        az.get("softmax").flops(**sizes)


def test_counts_check_options():
    with pytest.raises(ValueError, match="needs option grid="):
        az.get("softmax_frame").flops(1, 16, 2760, 72)
    with pytest.raises(ValueError, match="grid must multiply to N"):
        az.get("softmax_frame").flops(1, 16, 2760, 72, grid=(3, 23, 41))
