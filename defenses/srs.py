"""``srs``: simple random sampling (Yang et al. 2019; IF-Defense's settings) — drop random points."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.core.geometry import index_points
from benchmark.core.params import count
from defenses import register_defense
from defenses.base import PreprocessDefense, check_points

__all__ = ["SRS", "random_subset"]


def random_subset(points: Tensor, keep: int, generator: torch.Generator) -> Tensor:
    """``keep`` distinct points per cloud, uniformly at random, in their original order.

    Args:
        points: ``[B, N, 3]``.
        keep: ``1 <= keep <= N``.
        generator: CPU generator the draw comes from (the same generator state gives the
            same subsets on every device).

    Returns:
        ``[B, keep, 3]`` gathered from ``points``.
    """
    b, n, _ = points.shape
    if not 1 <= keep <= n:
        raise ValueError(f"srs: cannot keep {keep} of N = {n} points; keep must lie in [1, N]")
    scores = torch.rand(b, n, generator=generator).to(points.device)
    idx = scores.topk(keep, dim=1).indices.sort(dim=1).values
    return index_points(points, idx)


@register_defense("srs")
@dataclass
class SRS(PreprocessDefense):
    """Simple random sampling: drop 500 random points of each cloud (randomised).

    Hyperparameters (IF-Defense):
        num_drop: points removed per cloud; must be below the clouds' N (set it for small
            clouds, e.g. the ``smoke`` profile's 256 points).
    """

    num_drop: int = count(500, minimum=0)
    randomized: ClassVar[bool] = True

    def preprocess(self, points: Tensor, generator: torch.Generator) -> Tensor:
        check_points(points, "srs")
        n = points.shape[1]
        if not 0 <= self.num_drop < n:
            raise ValueError(
                f"srs: num_drop={self.num_drop} must lie in [0, N) for clouds of N = {n} points; "
                f"set defenses.srs.num_drop (e.g. --set defenses.srs.num_drop={n * 500 // 1024})"
            )
        return random_subset(points, n - self.num_drop, generator)
