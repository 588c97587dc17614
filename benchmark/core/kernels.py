"""Fused CPU kernels for inference paths where a model's layers are cheap but many.

``F.linear`` on the CPU writes the bias into the output, runs the GEMM, and a ReLU then reads
and writes the output again: three passes over activations that, for point-wise MLPs over
``[B, S, K, C]`` neighbourhoods (PU-Net), are hundreds of MB. oneDNN's fused linear
(``torch.ops.mkldnn._linear_pointwise``, what ``torch.compile`` emits on CPU) does it in one
pass: measured 1.2-2.4x faster on PU-Net's layer shapes (2 threads, AVX-512).

Used only where no gradient is needed (the op has no autograd formula) and only on float32
CPU tensors; everywhere else, and when the op is missing from a torch build, the plain
``F.linear`` (+ ``relu``) runs. Both agree to float rounding (the GEMMs block differently).
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["fused_linear_available", "linear_act"]


@functools.cache
def fused_linear_available() -> bool:
    """Whether this torch build has oneDNN's fused linear + ReLU and it agrees with ``F.linear``."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        x = torch.linspace(-1, 1, 24).view(4, 6)
        w = torch.linspace(-0.5, 0.5, 18).view(3, 6)
        b = torch.tensor([0.1, -0.2, 0.0])
        out = torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [None], "")
        return bool(torch.allclose(out, F.relu(F.linear(x, w, b)), atol=1e-6))
    except (AttributeError, RuntimeError, TypeError):
        return False


def linear_act(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool = True) -> Tensor:
    """``relu(x @ weight.T + bias)`` (or without the ReLU) over the last dim of ``x [..., in]``.

    Returns ``[..., out]``. Fused into one oneDNN kernel when nothing needs a gradient, the
    tensors are float32 on the CPU and the op exists; otherwise ``F.linear`` (+ ``F.relu``).
    """
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))
    if (not grad and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.numel() and fused_linear_available()):
        flat = x.reshape(-1, x.shape[-1])
        if not flat.is_contiguous():
            flat = flat.contiguous()
        out = torch.ops.mkldnn._linear_pointwise(flat, weight.contiguous(), bias, "relu" if relu else "none",
                                                 [None] if relu else [], "")
        return out.view(*x.shape[:-1], weight.shape[0])
    y = F.linear(x, weight, bias)
    return F.relu(y, inplace=True) if relu else y
