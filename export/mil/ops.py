"""The op table of the MIL interpreter: numpy implementations of the MIL ops, keyed by op
type (`OPS`), and the check that a program holds only ops the table has."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from export.mil.program import Program, UnsupportedOpError

# -- ops -------------------------------------------------------------------------------


def _axes(x: np.ndarray, axes) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(x.ndim))
    return tuple(int(a) % max(x.ndim, 1) for a in np.atleast_1d(axes))


def _reduce(fn: Callable) -> Callable:
    def op(x, axes=None, keep_dims=False):
        return fn(x, _axes(x, axes), bool(keep_dims))

    return op


def _lse(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keep else np.squeeze(out, axis=axes)


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=int(axis), keepdims=True))
    return e / np.sum(e, axis=int(axis), keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _erf(x):
    import torch  # exact erf without scipy

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _gelu(x, mode="EXACT"):
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    if mode != "EXACT":
        raise UnsupportedOpError(f"gelu mode {mode!r}")
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def _channel(alpha, x):
    """A per-channel (axis 1) parameter broadcast against x."""
    return np.reshape(alpha, (1, -1) + (1,) * (x.ndim - 2))


def _reshape(x, shape):
    shape = [int(s) for s in np.atleast_1d(shape)]
    if len(shape) == x.ndim:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return np.reshape(x, shape)


def _expand_dims(x, axes):
    out_rank = x.ndim + len(np.atleast_1d(axes))
    for a in sorted(int(a) % out_rank for a in np.atleast_1d(axes)):
        x = np.expand_dims(x, a)
    return x


def _squeeze(x, axes=None):
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=_axes(x, axes))


def _concat(values, axis, interleave=False):
    axis = int(axis) % values[0].ndim
    if bool(interleave):
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


def _split(x, axis, num_splits=None, split_sizes=None):
    axis = int(axis) % x.ndim
    if split_sizes is None:
        split_sizes = [x.shape[axis] // int(num_splits)] * int(num_splits)
    bounds = np.cumsum([int(s) for s in np.atleast_1d(split_sizes)])[:-1]
    return np.split(x, bounds, axis=axis)


def _slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    rank = x.ndim
    begin = [int(b) for b in np.atleast_1d(begin)]
    end = [int(e) for e in np.atleast_1d(end)]
    stride = [1] * rank if stride is None else [int(s) for s in np.atleast_1d(stride)]
    bm = [False] * rank if begin_mask is None else [bool(m) for m in np.atleast_1d(begin_mask)]
    em = [False] * rank if end_mask is None else [bool(m) for m in np.atleast_1d(end_mask)]
    sm = [False] * rank if squeeze_mask is None else [bool(m) for m in np.atleast_1d(squeeze_mask)]
    index = []
    for i in range(rank):
        if sm[i]:
            index.append(begin[i])  # one element, axis removed
        else:
            index.append(slice(None if bm[i] else begin[i], None if em[i] else end[i], stride[i]))
    return np.asarray(x[tuple(index)])


def _slice_by_size(x, begin, size):
    index = []
    for i, (b, s) in enumerate(zip(np.atleast_1d(begin), np.atleast_1d(size), strict=True)):
        b = int(b) % x.shape[i] if x.shape[i] else 0
        index.append(slice(b, None if int(s) == -1 else b + int(s)))
    return x[tuple(index)]


def _pad(x, pad, mode="constant", constant_val=0.0):
    pad = [int(p) for p in np.atleast_1d(pad)]
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=float(constant_val))
    modes = {"reflect": "reflect", "replicate": "edge"}
    if mode not in modes:
        raise UnsupportedOpError(f"pad mode {mode!r}")
    return np.pad(x, widths, mode=modes[mode])


def _matmul(x, y, transpose_x=False, transpose_y=False):
    if bool(transpose_x) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if bool(transpose_y) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _linear(x, weight, bias=None):
    out = np.matmul(x, weight.T)
    return out if bias is None else out + bias


def _einsum(values, equation):
    """The two equations MIL's einsum supports: "nchw,nwhu->nchu" and "chw,whr->chr" (any
    letters), batch and h axes broadcasting where one side has size 1."""
    a, b = values
    eq = str(equation).replace(" ", "")
    lhs, out = eq.split("->")
    ea, eb = lhs.split(",")
    if len(ea) == 4 and (eb, out) == (ea[0] + ea[3] + ea[2] + eb[3], ea[:3] + eb[3]):
        r = np.matmul(a.transpose(0, 2, 1, 3), b.transpose(0, 2, 1, 3))  # (n, h, c, u)
        return r.transpose(0, 2, 1, 3)
    if len(ea) == 3 and (eb, out) == (ea[2] + ea[1] + eb[2], ea[:2] + eb[2]):
        r = np.matmul(a.transpose(1, 0, 2), b.transpose(1, 0, 2))  # (h, c, r)
        return r.transpose(1, 0, 2)
    raise UnsupportedOpError(f"einsum equation {equation!r} (MIL supports nchw,nwhu->nchu only)")


def _conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """Grouped 2D convolution on NCHW (1D convolution runs as 2D with height 1)."""
    squeeze = x.ndim == 3
    if squeeze:
        x, weight = x[:, :, None, :], weight[:, :, None, :]
    if x.ndim != 4:
        raise UnsupportedOpError(f"conv with {x.ndim - 2} spatial dims (only 1D/2D)")
    k = weight.shape[2:]
    n_sp = 1 if squeeze else 2
    strides = [1] * n_sp if strides is None else [int(s) for s in np.atleast_1d(strides)]
    dil = [1] * n_sp if dilations is None else [int(d) for d in np.atleast_1d(dilations)]
    if squeeze:
        strides, dil = [1, *strides], [1, *dil]
    eff = [(k[i] - 1) * dil[i] + 1 for i in range(2)]
    if pad_type == "valid":
        widths = [(0, 0), (0, 0)]
    elif pad_type == "custom":
        p = [int(v) for v in np.atleast_1d(pad)]
        widths = [(0, 0), (p[0], p[1])] if squeeze else [(p[0], p[1]), (p[2], p[3])]
    elif pad_type in ("same", "same_lower"):
        widths = []
        for i in range(2):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + eff[i] - size, 0)
            small = total // 2
            widths.append((small, total - small) if pad_type == "same" else (total - small, small))
    else:
        raise UnsupportedOpError(f"conv pad_type {pad_type!r}")
    xp = np.pad(x, [(0, 0), (0, 0), *widths])
    if k == (1, 1):
        win = xp[:, :, :: strides[0], :: strides[1]][..., None, None]
    else:
        win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=(2, 3))
        win = win[:, :, :: strides[0], :: strides[1], :: dil[0], :: dil[1]]
    g = int(groups)
    n, c, oh, ow = win.shape[:4]
    win = win.reshape(n, g, c // g, oh, ow, k[0], k[1])
    w = weight.reshape(g, weight.shape[0] // g, c // g, k[0], k[1])
    out = np.einsum("ngchwij,gocij->ngohw", win, w, optimize=True)
    out = out.reshape(n, weight.shape[0], oh, ow)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out[:, :, 0, :] if squeeze else out


def _layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    axes = _axes(x, axes)
    norm_shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    c = x - np.mean(x, axis=axes, keepdims=True)
    out = c / np.sqrt(np.mean(c * c, axis=axes, keepdims=True) + float(epsilon))
    if gamma is not None:
        out = out * np.reshape(gamma, norm_shape)
    if beta is not None:
        out = out + np.reshape(beta, norm_shape)
    return out


def _batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    out = (x - _channel(mean, x)) / np.sqrt(_channel(variance, x) + float(epsilon))
    if gamma is not None:
        out = out * _channel(gamma, x)
    if beta is not None:
        out = out + _channel(beta, x)
    return out


def _instance(x, gamma, beta, epsilon):
    sp = tuple(range(2, x.ndim))
    c = x - np.mean(x, axis=sp, keepdims=True)
    out = c / np.sqrt(np.mean(c * c, axis=sp, keepdims=True) + float(epsilon))
    if gamma is not None:
        out = out * _channel(gamma, x)
    if beta is not None:
        out = out + _channel(beta, x)
    return out


def _gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(batch_dims) != 0:
        raise UnsupportedOpError("gather with batch_dims != 0")
    return np.take(x, indices.astype(np.int64), axis=int(axis))


def _affine_dequantize(quantized_data, zero_point, scale, axis):
    shape = [1] * quantized_data.ndim
    q = quantized_data.astype(np.float32)
    if np.ndim(scale) == 1 and np.size(scale) > 1:
        shape[int(axis)] = -1
    zp = np.reshape(zero_point, shape) if np.ndim(zero_point) else zero_point
    sc = np.reshape(scale, shape) if np.ndim(scale) else scale
    return (q - np.asarray(zp, dtype=np.float32)) * np.asarray(sc, dtype=np.float32)


_CAST_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}


def _cast(x, dtype):
    if dtype not in _CAST_DTYPES:
        raise UnsupportedOpError(f"cast to {dtype!r}")
    return np.asarray(x).astype(_CAST_DTYPES[dtype])


def _binary(fn: Callable) -> Callable:
    return lambda x, y: fn(x, y)


def _unary(fn: Callable) -> Callable:
    return lambda x: fn(x)


OPS: dict[str, Callable] = {
    # elementwise binary (numpy broadcasting, as MIL's)
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.true_divide),
    "floor_div": _binary(np.floor_divide),
    "mod": _binary(np.mod),
    "pow": _binary(np.power),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "less": _binary(np.less),
    "less_equal": _binary(np.less_equal),
    "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or),
    "logical_xor": _binary(np.logical_xor),
    # elementwise unary
    "abs": _unary(np.abs),
    "acos": _unary(np.arccos),
    "asin": _unary(np.arcsin),
    "atan": _unary(np.arctan),
    "atanh": _unary(np.arctanh),
    "ceil": _unary(np.ceil),
    "cos": _unary(np.cos),
    "cosh": _unary(np.cosh),
    "erf": _unary(_erf),
    "exp": _unary(np.exp),
    "exp2": _unary(np.exp2),
    "floor": _unary(np.floor),
    "round": _unary(np.round),
    "sign": _unary(np.sign),
    "sin": _unary(np.sin),
    "sinh": _unary(np.sinh),
    "sqrt": _unary(np.sqrt),
    "square": _unary(np.square),
    "tan": _unary(np.tan),
    "tanh": _unary(np.tanh),
    "logical_not": _unary(np.logical_not),
    "inverse": lambda x, epsilon=1e-4: 1.0 / (x + epsilon),
    "log": lambda x, epsilon=1e-45: np.log(x + epsilon),
    "rsqrt": lambda x, epsilon=1e-12: 1.0 / np.sqrt(x + epsilon),
    "clip": lambda x, alpha, beta: np.minimum(np.maximum(x, alpha), beta),
    "threshold": lambda x, alpha: np.maximum(x, alpha),
    "cast": _cast,
    "identity": lambda x: x,
    # activations
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6),
    "elu": lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
    "leaky_relu": lambda x, alpha=0.01: np.where(x < 0, x * alpha, x),
    "prelu": lambda x, alpha: np.maximum(x, 0) + np.minimum(x, 0) * _channel(alpha, x),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "gelu": _gelu,
    "sigmoid_hard": lambda x, alpha, beta: np.minimum(np.maximum(alpha * x + beta, 0), 1),
    "linear_activation": lambda x, alpha, beta: alpha * x + beta,
    "scaled_tanh": lambda x, alpha, beta: alpha * np.tanh(beta * x),
    "clamped_relu": lambda x, alpha, beta: (
        np.minimum(np.maximum(x, 0), beta) + np.minimum(np.minimum(x, 0) * alpha, beta)
    ),
    "thresholded_relu": lambda x, alpha=1.0: np.where(x < alpha, 0, x),
    "softmax": _softmax,
    # reductions
    "reduce_sum": _reduce(lambda x, a, k: np.sum(x, axis=a, keepdims=k)),
    "reduce_mean": _reduce(lambda x, a, k: np.mean(x, axis=a, keepdims=k)),
    "reduce_max": _reduce(lambda x, a, k: np.max(x, axis=a, keepdims=k)),
    "reduce_min": _reduce(lambda x, a, k: np.min(x, axis=a, keepdims=k)),
    "reduce_prod": _reduce(lambda x, a, k: np.prod(x, axis=a, keepdims=k)),
    "reduce_sum_square": _reduce(lambda x, a, k: np.sum(x * x, axis=a, keepdims=k)),
    "reduce_l1_norm": _reduce(lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k)),
    "reduce_l2_norm": _reduce(lambda x, a, k: np.sqrt(np.sum(x * x, axis=a, keepdims=k))),
    "reduce_log_sum": _reduce(lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k))),
    "reduce_log_sum_exp": _reduce(_lse),
    "reduce_argmax": lambda x, axis=-1, keep_dims=False: np.argmax(
        x, axis=int(axis), keepdims=bool(keep_dims)
    ),
    "reduce_argmin": lambda x, axis=-1, keep_dims=False: np.argmin(
        x, axis=int(axis), keepdims=bool(keep_dims)
    ),
    # layout and indexing
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "reshape": _reshape,
    "expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "concat": _concat,
    "stack": lambda values, axis: np.stack(values, axis=int(axis)),
    "split": _split,
    "slice_by_index": _slice_by_index,
    "slice_by_size": _slice_by_size,
    "tile": lambda x, reps: np.tile(x, [int(r) for r in reps]),
    "pad": _pad,
    "select": lambda cond, a, b: np.where(cond, a, b),
    "fill": lambda shape, value=0.0: np.full([int(s) for s in np.atleast_1d(shape)], value),
    "fill_like": lambda ref_tensor, value=0.0: np.full(ref_tensor.shape, value),
    "shape": lambda x: np.array(x.shape, dtype=np.int32),
    "range_1d": lambda end, start, step: np.arange(start, end, step),
    "gather": _gather,
    "gather_along_axis": lambda x, indices, axis=0: np.take_along_axis(
        x, indices.astype(np.int64), axis=int(axis)
    ),
    # linear algebra
    "matmul": _matmul,
    "linear": _linear,
    "einsum": _einsum,
    "conv": _conv,
    # normalisation
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "instance_norm": _instance,
    # constants
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_cast": lambda source_val, output_dtype: _cast(source_val, output_dtype),
}

# Parameters that take a tuple of values (MIL TupleInputType).
_TUPLE_PARAMS = {"concat": ("values",), "stack": ("values",), "einsum": ("values",)}
_IGNORED_ATTRIBUTES = ("name",)


def supported_ops() -> tuple[str, ...]:
    """Op types run_mil can execute (besides `const`)."""
    return tuple(sorted({"const", *OPS}))


def _first_output(op) -> str:
    return op.outputs[0].name if op.outputs else "?"


def check_supported(prog: Program) -> None:
    """Raises UnsupportedOpError naming the first op type the interpreter cannot run."""
    for op in prog.operations:
        if op.type != "const" and op.type not in OPS:
            raise UnsupportedOpError(
                f"run_mil cannot run MIL op {op.type!r} (output {_first_output(op)!r}) in "
                f"{prog.source}; export.mil.supported_ops() lists the {len(supported_ops())} "
                "it can"
            )
        if op.blocks:
            raise UnsupportedOpError(
                f"run_mil cannot run control flow: op {op.type!r} ({_first_output(op)!r}) "
                "has nested blocks"
            )
