"""The peers our implementations are measured against, written as their projects write them
(facts from the sources; the code is ours). Each takes (B, H, N, D) fp32 tensors like the
zoo and is benchmarked in the same pytest-benchmark group as the zoo's implementations, so
`pytest-benchmark compare` reads as ratios.

- torch SDPA: `F.scaled_dot_product_attention`, the baseline a CPU user has for softmax.
- torch SDPA over frames: per-frame softmax with the frames folded into the batch.
- SANA's LiteLA (diffusers' SanaLinearAttnProcessor2_0 / EfficientViT): ReLU q and k in
  fp32, channels-first per head, V padded with a row of ones so that one matmul gives the
  numerator and the denominator, eps 1e-15.
"""

from __future__ import annotations

import torch.nn.functional as F


def sdpa(q, k, v, **opts):
    return F.scaled_dot_product_attention(q, k, v, scale=opts.get("scale"))


def sdpa_frames(q, k, v, grid, **opts):
    b, h, n, _ = q.shape
    t = grid[0]

    def fold(x):  # (B, H, T*F, D) -> (B*T, H, F, D): frames into the batch
        return x.view(b, h, t, n // t, x.shape[-1]).transpose(1, 2).reshape(b * t, h, n // t, -1)

    o = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), scale=opts.get("scale"))
    return o.view(b, t, h, n // t, -1).transpose(1, 2).reshape(b, h, n, -1)


def sana_lite_la(q, k, v, eps: float = 1e-15, **opts):
    """SANA's linear attention: (B, H, N, D) in, the channels-first math inside."""
    q, k, v = (x.float().transpose(-1, -2) for x in (q, k, v))  # (B, H, D, N)
    q, k = F.relu(q), F.relu(k)
    v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1.0)  # (B, H, D + 1, N)
    vk = v @ k.transpose(-1, -2)  # (B, H, D + 1, D)
    out = vk @ q  # (B, H, D + 1, N)
    out = out[:, :, :-1] / (out[:, :, -1:] + eps)
    return out.transpose(-1, -2)


# variant -> {peer name: function}
PEERS = {
    "softmax": {"torch_sdpa": sdpa},
    "softmax_frame": {"torch_sdpa_frames": sdpa_frames},
    "relu_linear": {"sana_lite_la": sana_lite_la},
}
