"""Batched point-cloud primitives every geometry op builds on: input checks, pairwise
squared distances, batched gathers.

Conventions are those of :mod:`benchmark.core.geometry` (``[B, N, 3]`` float, channels last;
squared distances). Floor 0: imports torch only.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["index_points", "pairwise_sq_dists"]


# --------------------------------------------------------------------------- validation


def _check_cloud(name: str, x: Tensor, dim: int | None = 3) -> None:
    """Raise ValueError unless ``x`` is a float tensor ``[B, N, dim]`` (any last dim if None)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [B, N, 3]; got {type(x).__name__}")  # noqa: TRY004
    if x.dim() != 3 or (dim is not None and x.shape[-1] != dim):
        want = "[B, N, D]" if dim is None else f"[B, N, {dim}]"
        raise ValueError(f"{name} must have shape {want}; got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")


def _check_same_batch(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same batch size; got {a.shape[0]} and {b.shape[0]}"
        )


# --------------------------------------------------------------------------- basics


def pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances between every point of ``a`` and every point of ``b``.

    Args:
        a: ``[B, N, D]`` float.
        b: ``[B, M, D]`` float, same batch size and D.

    Returns:
        ``[B, N, M]``, ``out[i, n, m] = ||a[i, n] - b[i, m]||^2`` (squared units), clamped
        at 0 and differentiable w.r.t. both inputs. Computed as ``|a|^2 + |b|^2 - 2 a.b``
        after shifting both clouds by ``a``'s centroid (distances are translation
        invariant; the shift only reduces cancellation error).
    """
    _check_cloud("a", a, dim=None)
    _check_cloud("b", b, dim=None)
    _check_same_batch("a", a, "b", b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"a [B, N, D] and b [B, M, D] must have the same last dim D; got {a.shape[-1]} and {b.shape[-1]}"
        )
    centre = a.detach().mean(dim=1, keepdim=True)
    a = a - centre
    b = b - centre
    sq = (a * a).sum(-1).unsqueeze(-1) + (b * b).sum(-1).unsqueeze(-2) - 2.0 * a @ b.transpose(-1, -2)
    return sq.clamp_min(0.0)


def index_points(x: Tensor, idx: Tensor) -> Tensor:
    """Batched gather: ``out[b, ...] = x[b, idx[b, ...]]``.

    Args:
        x: ``[B, N, C]``.
        idx: integer tensor ``[B, ...]`` (e.g. ``[B, S]`` or ``[B, S, K]``), values in ``[0, N)``.

    Returns:
        ``[B, ..., C]``; differentiable w.r.t. ``x``.
    """
    _check_cloud("x", x, dim=None)
    if not isinstance(idx, Tensor) or idx.dim() < 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError("idx must be an integer tensor of shape [B, ...]")
    if idx.shape[0] != x.shape[0]:
        raise ValueError(
            f"x [B, N, C] and idx [B, ...] must have the same batch size; got {x.shape[0]} and {idx.shape[0]}"
        )
    batch, n, channels = x.shape
    if idx.numel():  # an index past N would silently read the next cloud's points below
        low, high = torch.aminmax(idx)
        torch._assert_async((low >= 0) & (high < n), f"index_points: idx must lie in [0, N) = [0, {n})")
    # rows of the flattened [B * N, C] table: one index read per row instead of one per
    # element (torch.gather with an expanded index), 1.4x faster on PU-Net's neighbourhoods
    offsets = (torch.arange(batch, device=idx.device) * n).view(batch, *([1] * (idx.dim() - 1)))
    rows = (idx.long() + offsets).reshape(-1)
    return x.reshape(batch * n, channels).index_select(0, rows).view(*idx.shape, channels)

