"""PointNet++ with single-scale grouping (Qi et al., NeurIPS 2017), classification, in pure torch.

Layout follows the paper's SSG classification network (and its reference code):

    points [B, N, 3] -> SA(512 centres, r 0.2, 32 nbrs, MLP 64-64-128)
    -> SA(128 centres, r 0.4, 64 nbrs, MLP 128-128-256) -> SA(group all, MLP 256-512-1024)
    -> FC 512-256 (BN, ReLU, dropout 0.5) -> C

A set-abstraction (SA) layer picks centres by farthest point sampling (first centre =
index 0, so the model is deterministic), groups up to ``nsample`` points within
``radius`` of each centre (:func:`ball_query`), concatenates each neighbour's coordinates
relative to its centre with its features, runs a shared MLP (1x1 conv, BN, ReLU) and
max-pools over the group. The last SA groups all points around the origin.

Deviations from the CUDA reference, both for clouds the reference never sees:

- the ball query keeps the ``nsample`` *nearest* points within the radius (the CUDA op
  keeps the first ``nsample`` in storage order): same groups whenever a ball holds at
  most ``nsample`` points, and invariant to the order of the points otherwise;
- a cloud with fewer points than an SA layer's centres uses all its points as centres
  (attacks may drop points; the reference would fail).

Floor 1: imports torch, ``benchmark.core.geometry`` and ``models`` only.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from benchmark.core.geometry import farthest_point_sample, index_points, knn
from models import register_model

from .pointnet import MLPHead, PointwiseMLP

__all__ = ["PointNet2SSG", "SetAbstraction", "ball_query", "pointnet2_ssg"]

#: Paper sizes of the two local SA layers: (centres, radius, neighbours, MLP widths).
SSG_LAYERS: tuple[tuple[int, float, int, tuple[int, ...]], ...] = (
    (512, 0.2, 32, (64, 64, 128)),
    (128, 0.4, 64, (128, 128, 256)),
)


def ball_query(xyz: Tensor, centres: Tensor, radius: float, nsample: int) -> Tensor:
    """Up to ``nsample`` points of ``xyz`` within ``radius`` of each centre, padded with the first.

    Vectorised as a k-NN query (``benchmark.core.geometry.knn``, indices without autograd):
    the ``nsample`` nearest points, nearest first; those farther than ``radius`` (and
    the missing columns when ``N < nsample``) are replaced by the nearest point, as the
    reference pads with the first point it found. The nearest point is kept even when
    it lies outside the radius, so every group is non-empty (a centre taken from the
    cloud is its own nearest point, at distance 0).

    Args:
        xyz: ``[B, N, 3]`` points.
        centres: ``[B, S, 3]`` ball centres.
        radius: ball radius (cloud units, not squared); boundary points count as inside.
        nsample: indices per ball.

    Returns:
        ``[B, S, nsample]`` long indices into ``xyz``.
    """
    k = min(nsample, xyz.shape[1])
    idx, dist = knn(xyz, k, query=centres)
    first = idx[..., :1]
    idx = torch.where(dist.detach() > radius * radius, first, idx)
    if k < nsample:
        idx = torch.cat([idx, first.expand(-1, -1, nsample - k)], dim=-1)
    return idx


def _max_pool(x: Tensor, dim: int) -> Tensor:
    """``x.amax(dim)``; with autograd, ``max(dim)`` instead (same values, far cheaper backward on CPU)."""
    return x.max(dim=dim).values if torch.is_grad_enabled() and x.requires_grad else x.amax(dim=dim)


class SetAbstraction(nn.Module):
    """One single-scale set-abstraction layer.

    Args:
        npoint: centres to sample; None = group all points around the origin.
        radius: ball radius (ignored when grouping all).
        nsample: neighbours per ball (ignored when grouping all).
        in_channels: feature width of the input points (0 = coordinates only).
        mlp: widths of the shared MLP; the last is the output feature width.
    """

    def __init__(
        self, npoint: int | None, radius: float, nsample: int, in_channels: int, mlp: Sequence[int]
    ) -> None:
        super().__init__()
        self.npoint = npoint
        self.radius = radius
        self.nsample = nsample
        self.mlp = PointwiseMLP(in_channels + 3, mlp)
        self.out_channels = self.mlp.out_channels

    def forward(self, xyz: Tensor, features: Tensor | None) -> tuple[Tensor, Tensor]:
        """Abstract a point set.

        Args:
            xyz: ``[B, N, 3]`` point coordinates.
            features: ``[B, N, C]`` point features, or None.

        Returns:
            ``(centres [B, S, 3], features [B, S, mlp[-1]])``; ``S = 1`` (the origin) when
            grouping all, else ``min(npoint, N)``.
        """
        if self.npoint is None:
            centres = xyz.new_zeros(xyz.shape[0], 1, 3)
            grouped = xyz.unsqueeze(1)  # [B, 1, N, 3], relative to the origin
            if features is not None:
                grouped = torch.cat([grouped, features.unsqueeze(1)], dim=-1)
        else:
            centre_idx = farthest_point_sample(xyz, min(self.npoint, xyz.shape[1]))
            centres = index_points(xyz, centre_idx)  # [B, S, 3]
            idx = ball_query(xyz, centres, self.radius, self.nsample)  # [B, S, K]
            grouped = index_points(xyz, idx) - centres.unsqueeze(2)  # [B, S, K, 3]
            if features is not None:
                grouped = torch.cat([grouped, index_points(features, idx)], dim=-1)
        return centres, _max_pool(self.mlp(grouped), dim=2)


class PointNet2SSG(nn.Module):
    """PointNet++ SSG classifier: ``[B, N, 3]`` points -> ``[B, num_classes]`` logits.

    Args:
        num_classes: C.
        sa_layers: the local SA layers as ``(centres, radius, neighbours, MLP widths)``
            (paper: :data:`SSG_LAYERS`).
        global_mlp: widths of the final group-all SA layer (paper: 256-512-1024).
        head: hidden widths of the classifier (paper: 512-256).
        dropout: drop probability after each hidden FC (paper: keep 0.5 -> 0.5).
    """

    def __init__(
        self,
        num_classes: int = 40,
        sa_layers: Sequence[tuple[int, float, int, Sequence[int]]] = SSG_LAYERS,
        global_mlp: Sequence[int] = (256, 512, 1024),
        head: Sequence[int] = (512, 256),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.sa_layers = nn.ModuleList()
        width = 0
        for npoint, radius, nsample, mlp in sa_layers:
            layer = SetAbstraction(npoint, radius, nsample, width, mlp)
            self.sa_layers.append(layer)
            width = layer.out_channels
        self.sa_layers.append(SetAbstraction(None, 0.0, 0, width, global_mlp))
        self.head = MLPHead(self.sa_layers[-1].out_channels, head, num_classes, dropout)

    def global_feature(self, points: Tensor) -> Tensor:
        """``points`` ``[B, N, 3]`` -> ``[B, global_mlp[-1]]``."""
        xyz, features = points, None
        for layer in self.sa_layers:
            xyz, features = layer(xyz, features)
        return features.squeeze(1)

    def forward(self, points: Tensor) -> Tensor:
        """``points`` ``[B, N, 3]`` float32 -> logits ``[B, num_classes]``."""
        return self.head(self.global_feature(points))


@register_model("pointnet2-ssg")
def pointnet2_ssg(num_classes: int = 40, **kwargs) -> PointNet2SSG:
    """PointNet++ (Qi et al. 2017), single-scale grouping, FPS + ball query in pure torch: 1.5 M parameters."""
    sizes = {"sa_layers": SSG_LAYERS, "global_mlp": (256, 512, 1024), "head": (512, 256)}
    return PointNet2SSG(num_classes=num_classes, **{**sizes, **kwargs})
