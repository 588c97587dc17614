"""``sor``: statistical outlier removal (Zhou et al., DUP-Net ICCV 2019; IF-Defense's settings).

Per point, the mean (squared) distance to its ``k`` nearest other points; points whose
value exceeds ``mean + alpha * std`` of their cloud are removed (PROTOCOL.md section 3).
The number of survivors differs per cloud; to keep a batch rectangular, every cloud is
refilled to a fixed size by repeating its kept points in order (a repeated point changes
neither a max-pooled feature nor the cloud's surface), so no loop over samples or points
is needed. Presets: ``sor`` = IF-Defense (k 2, alpha 1.1, squared distances);
``sor-mrpd`` = the MRPD code (k 16, alpha 1.0, plain distances).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from benchmark.core.geometry import index_points, knn
from benchmark.core.params import count, param
from defenses import register_defense
from defenses.base import PreprocessDefense, check_points

__all__ = ["SOR", "resample_kept", "sor_mask"]


def sor_mask(points: Tensor, k: int = 2, alpha: float = 1.1, *, squared: bool = True) -> Tensor:
    """Which points statistical outlier removal keeps.

    Args:
        points: ``[B, N, 3]`` float, ``N > k``.
        k: neighbours per point (the point itself excluded).
        alpha: threshold in standard deviations above the cloud's mean.
        squared: average squared distances (IF-Defense) or plain distances (MRPD code).

    Returns:
        ``[B, N]`` bool; at least one point per cloud is kept (the one with the smallest value).
    """
    check_points(points, "sor")
    n = points.shape[1]
    if not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"sor: k must be an int in [1, N - 1] = [1, {n - 1}]; got k={k}")
    with torch.no_grad():
        _, dist = knn(points.detach(), k, exclude_self=True)  # [B, N, k] squared
        value = (dist if squared else dist.clamp_min(0).sqrt()).mean(-1)  # [B, N]
        threshold = value.mean(-1, keepdim=True) + alpha * value.std(-1, keepdim=True).nan_to_num(0.0)
        mask = value <= threshold
        mask.scatter_(1, value.argmin(-1, keepdim=True), True)
    return mask


def resample_kept(points: Tensor, mask: Tensor, num_points: int) -> Tensor:
    """``num_points`` points per cloud drawn from the kept ones, in their original order,
    repeating them cyclically when fewer are kept (and truncating when more).

    Args:
        points: ``[B, N, 3]``.
        mask: ``[B, N]`` bool, at least one True per row.
        num_points: ``M >= 1``.

    Returns:
        ``[B, M, 3]``, gathered from ``points`` (differentiable w.r.t. the kept points).
    """
    if mask.shape != points.shape[:2]:
        raise ValueError(f"mask must have shape [B, N] = {list(points.shape[:2])}; got {list(mask.shape)}")
    count = mask.sum(1, keepdim=True)  # [B, 1]
    if bool((count == 0).any()):
        raise ValueError("resample_kept: a cloud has no kept point; keep at least one per cloud")
    order = torch.sort(mask.to(torch.uint8), dim=1, descending=True, stable=True).indices  # kept first
    slots = torch.arange(num_points, device=points.device).unsqueeze(0) % count  # [B, M]
    return index_points(points, order.gather(1, slots))


@register_defense("sor-mrpd", k=16, alpha=1.0, squared=False)
@register_defense("sor")
@dataclass
class SOR(PreprocessDefense):
    """Statistical outlier removal: drop points far from their k neighbours (deterministic).

    Hyperparameters (``sor`` = IF-Defense; ``sor-mrpd`` = the MRPD code):
        k: neighbours per point.
        alpha: keep points with mean neighbour distance <= mean + alpha * std of the cloud.
        squared: use squared distances (IF-Defense) or plain ones (MRPD code).
        num_points: size of the output clouds (kept points repeated cyclically to fill
            it); None = the input's N.
    """

    k: int = count(2)
    alpha: float = param(1.1)
    squared: bool = param(True)
    num_points: int | None = count(None)

    def preprocess(self, points: Tensor, generator: torch.Generator) -> Tensor:
        mask = sor_mask(points, self.k, self.alpha, squared=self.squared)
        return resample_kept(points, mask, self.num_points or points.shape[1])
