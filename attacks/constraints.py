"""Constraints on a perturbation ``delta = x' - x`` of shape ``[B, N, 3]`` (PROTOCOL.md section 1).

All functions are vectorised over the batch and the points, differentiable where the
operation is, and return a new tensor (the input is never modified). A ``budget`` is a
Python float or a ``[B]`` tensor (one budget per sample), in cloud units (not squared).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["clip_l2", "clip_linf", "clip_per_point", "project_to_surface"]


def _per_sample(budget: float | Tensor, delta: Tensor) -> Tensor:
    """``budget`` as a ``[B]`` tensor on ``delta``'s device and dtype."""
    b = torch.as_tensor(budget, dtype=delta.dtype, device=delta.device)
    if b.dim() == 0:
        b = b.expand(delta.shape[0])
    if b.shape != (delta.shape[0],):
        raise ValueError(f"budget must be a float or a [B] tensor with B = {delta.shape[0]}; got {list(b.shape)}")
    if bool((b < 0).any()):
        raise ValueError("budget must be >= 0")
    return b


def _check_delta(delta: Tensor) -> None:
    if delta.dim() != 3 or delta.shape[-1] != 3:
        raise ValueError(f"delta must have shape [B, N, 3]; got {list(delta.shape)}")


def clip_l2(delta: Tensor, budget: float | Tensor) -> Tensor:
    """Global L2 clip (``ClipPointsL2``): rescale each sample's whole displacement so that
    its L2 norm over all ``3N`` coordinates is ``<= budget``; samples inside are unchanged.

    Args:
        delta: ``[B, N, 3]`` displacement.
        budget: float or ``[B]``, the global L2 radius.

    Returns:
        ``[B, N, 3]``.
    """
    _check_delta(delta)
    b = _per_sample(budget, delta)
    norm = delta.flatten(1).norm(dim=1)
    scale = torch.where(norm > b, b / norm.clamp_min(1e-12), torch.ones_like(norm))
    return delta * scale[:, None, None]


def clip_per_point(delta: Tensor, budget: float | Tensor) -> Tensor:
    """Per-point Euclidean clip (the reference code's ``ClipPointsLinf``): rescale each
    point's displacement vector so that ``||delta_i||_2 <= budget``; points inside are unchanged.

    Args:
        delta: ``[B, N, 3]`` displacement.
        budget: float or ``[B]``, the per-point radius.

    Returns:
        ``[B, N, 3]``.
    """
    _check_delta(delta)
    b = _per_sample(budget, delta)[:, None]  # [B, 1]
    norm = delta.norm(dim=-1)  # [B, N]
    scale = torch.where(norm > b, b / norm.clamp_min(1e-12), torch.ones_like(norm))
    return delta * scale[..., None]


def clip_linf(delta: Tensor, budget: float | Tensor) -> Tensor:
    """True coordinate-wise L-infinity clip: clamp every coordinate to ``[-budget, budget]``.

    Args:
        delta: ``[B, N, 3]`` displacement.
        budget: float or ``[B]``, the per-coordinate bound.

    Returns:
        ``[B, N, 3]``.
    """
    _check_delta(delta)
    b = _per_sample(budget, delta)[:, None, None]
    return torch.maximum(torch.minimum(delta, b), -b)


def project_to_surface(delta: Tensor, normals: Tensor) -> Tensor:
    """Surface projection (``ProjectInnerPoints``): where a point moves against its normal
    (``<delta_i, n_i> < 0``), keep only the tangential part ``delta_i - <delta_i, n_i> n_i``
    (zero when anti-parallel); points moved outward or tangentially are unchanged.

    Args:
        delta: ``[B, N, 3]`` displacement.
        normals: ``[B, N, 3]`` unit outward normals of the clean cloud (e.g.
            ``benchmark.core.geometry.estimate_normals``).

    Returns:
        ``[B, N, 3]``.
    """
    _check_delta(delta)
    if normals.shape != delta.shape:
        raise ValueError(f"normals must have the shape of delta {list(delta.shape)}; got {list(normals.shape)}")
    dot = (delta * normals).sum(dim=-1, keepdim=True)  # [B, N, 1]
    return delta - torch.where(dot < 0, dot, torch.zeros_like(dot)) * normals


#: How a budget relates to the cloud size: ``absolute`` (cloud units) or ``sqrt3k`` (IF-Defense:
#: the budget times ``sqrt(3N)``, a per-coordinate RMS budget turned into a global L2 radius).
BUDGET_SCALES = ("absolute", "sqrt3k")


def scaled_budget(budget: float, budget_scale: str, num_points: int) -> float:
    """The radius used for clouds of ``num_points`` points under ``budget_scale``."""
    if budget_scale not in BUDGET_SCALES:
        raise ValueError(f"budget_scale must be one of {', '.join(BUDGET_SCALES)}; got {budget_scale!r}")
    return float(budget) * (math.sqrt(3 * num_points) if budget_scale == "sqrt3k" else 1.0)


def check_budget_scale(owner: str, budget_scale: str, norm: str) -> None:
    """``sqrt3k`` scales a global L2 budget only: raise ``ValueError`` naming ``owner`` otherwise."""
    if budget_scale == "sqrt3k" and norm != "l2":
        raise ValueError(f"{owner}: budget_scale='sqrt3k' scales a global L2 budget; use norm='l2' or "
                         "budget_scale='absolute'")
