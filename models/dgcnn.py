"""DGCNN (Wang et al., ACM TOG 2019): EdgeConv on a k-NN graph rebuilt in feature space per layer.

Layout follows the paper's classification network (and its reference PyTorch code):

    points [B, N, 3] -> EdgeConv 64 -> EdgeConv 64 -> EdgeConv 128 -> EdgeConv 256
    -> concat (512) -> shared 1x1 layer emb (1024) -> [max-pool, avg-pool] (2 x emb)
    -> FC 512-256 (BN, LeakyReLU 0.2, dropout 0.5) -> C

Each EdgeConv builds the k-NN graph (the point itself included, as in the reference code)
on its own input features, forms the edge feature ``[x_j - x_i, x_i]`` for every
neighbour ``j`` of ``i``, applies a shared linear layer ``W = [W1, W2]`` (no bias), batch
norm, LeakyReLU(0.2), and takes the max over the k neighbours.

``EdgeConv`` computes this "project-then-gather" (measured 1.5-3x faster on CPU,
NOTES-env.md): ``W [x_j - x_i, x_i] = W1 x_j + (W2 - W1) x_i``, so both projections are
made once per point and only the projected ``W1 x`` is gathered per edge. The weight is
stored as the reference's ``[out, 2 C]`` matrix, so reference checkpoints map directly.
In eval mode batch norm is a per-channel affine map and LeakyReLU is increasing, so the
winning neighbour is picked before them (the max of ``W1 x_j``, or the min for channels
whose BN scale is negative) without autograd, and only the winners are gathered with
gradient: the same numbers and input gradients, without normalising, activating or
keeping the ``[B, N, k, out]`` edge tensor for backward.

Floor 1: imports torch, ``benchmark.core.geometry`` and ``models`` only.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.geometry import index_points, knn_indices
from models import register_model

__all__ = ["DGCNN", "EdgeConv", "dgcnn", "dgcnn_small", "feature_knn"]

def _max_pool(x: Tensor, dim: int) -> Tensor:
    """``x.amax(dim)``; with autograd, ``max(dim)`` instead (same values, far cheaper backward on CPU)."""
    return x.max(dim=dim).values if torch.is_grad_enabled() and x.requires_grad else x.amax(dim=dim)


@torch.no_grad()
def feature_knn(x: Tensor, k: int) -> Tensor:
    """Indices of the k nearest neighbours of every point, in any feature dimension.

    The point itself is its own nearest neighbour (distance 0), as in the reference DGCNN;
    ``benchmark.core.geometry.knn_indices`` bounds memory by chunking and selects by ``topk``.

    Args:
        x: ``[B, N, D]`` float features.
        k: neighbours per point, ``1 <= k <= N``.

    Returns:
        ``[B, N, k]`` long indices into ``x`` (no autograd).
    """
    return knn_indices(x, k)


class EdgeConv(nn.Module):
    """One EdgeConv layer: ``max_j LeakyReLU(BN(W [x_j - x_i, x_i]))`` over the k-NN graph.

    Args:
        in_channels: C, the point feature width.
        out_channels: width of the output features.
        negative_slope: LeakyReLU slope (paper: 0.2).

    ``self.linear.weight`` is ``[out, 2 C]``: the reference's 1x1 conv weight, columns
    ``[:C]`` acting on ``x_j - x_i`` and ``[C:]`` on ``x_i``.
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.negative_slope = negative_slope
        self.linear = nn.Linear(2 * in_channels, out_channels, bias=False)
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        """Edge features of each point's neighbours, max-pooled.

        Args:
            x: ``[B, N, C]`` point features.
            idx: ``[B, N, k]`` neighbour indices into ``x`` (e.g. from :func:`feature_knn`).

        Returns:
            ``[B, N, out_channels]``.
        """
        c, out = self.in_channels, self.out_channels
        w_nbr, w_ctr = self.linear.weight[:, :c], self.linear.weight[:, c:]
        projected = x @ torch.cat([w_nbr, w_ctr - w_nbr], dim=0).t()  # [B, N, 2 out]
        nbr, ctr = projected[..., :out], projected[..., out:]
        if self.training or not self.bn.track_running_stats:
            edges = index_points(nbr, idx) + ctr.unsqueeze(2)  # [B, N, k, out]
            edges = self.bn(edges.reshape(-1, out)).reshape(edges.shape)
            return _max_pool(F.leaky_relu(edges, self.negative_slope), dim=2)
        # Eval: BN is z -> a z + b per channel and LeakyReLU is increasing, so the max over
        # neighbours of f(a (nbr_j + ctr_i) + b) is reached at the neighbour maximising
        # sign(a) nbr_j. With autograd, pick it without autograd and gather only the winners.
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        sign = torch.where(scale < 0, -1.0, 1.0).to(x.dtype)
        if torch.is_grad_enabled() and nbr.requires_grad:
            with torch.no_grad():
                best = index_points(nbr * sign, idx).max(dim=2).indices  # [B, N, out], in [0, k)
                winner = idx.gather(2, best)  # [B, N, out], point index per channel
            pooled = nbr.gather(1, winner) + ctr  # [B, N, out]
        else:
            pooled = index_points(nbr * sign, idx).amax(dim=2) * sign + ctr
        pooled = F.batch_norm(
            pooled.reshape(-1, out),
            self.bn.running_mean,
            self.bn.running_var,
            self.bn.weight,
            self.bn.bias,
            training=False,
            eps=self.bn.eps,
        ).reshape(pooled.shape)
        return F.leaky_relu(pooled, self.negative_slope)


class DGCNN(nn.Module):
    """DGCNN classifier: ``[B, N, 3]`` points -> ``[B, num_classes]`` logits.

    Args:
        num_classes: C.
        k: neighbours per point in every EdgeConv graph (paper: 20); a cloud of fewer
            points uses all of them.
        edge_channels: output widths of the EdgeConv layers (paper: 64-64-128-256).
        emb_dims: width of the shared layer before pooling (paper: 1024).
        head: hidden widths of the classifier (paper: 512-256).
        dropout: drop probability after each hidden FC (paper: 0.5).
        negative_slope: LeakyReLU slope everywhere (paper: 0.2).
    """

    def __init__(
        self,
        num_classes: int = 40,
        k: int = 20,
        edge_channels: Sequence[int] = (64, 64, 128, 256),
        emb_dims: int = 1024,
        head: Sequence[int] = (512, 256),
        dropout: float = 0.5,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.k = k
        self.negative_slope = negative_slope
        self.edge_convs = nn.ModuleList()
        width = 3
        for out in edge_channels:
            self.edge_convs.append(EdgeConv(width, out, negative_slope))
            width = out
        self.embed = nn.Linear(sum(edge_channels), emb_dims, bias=False)
        self.embed_bn = nn.BatchNorm1d(emb_dims)
        layers: list[nn.Module] = []
        width = 2 * emb_dims
        for i, hidden in enumerate(head):  # reference: first FC without bias, later ones with
            layers += [nn.Linear(width, hidden, bias=i > 0), nn.BatchNorm1d(hidden), nn.LeakyReLU(negative_slope)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)

    def global_feature(self, points: Tensor) -> Tensor:
        """``points`` ``[B, N, 3]`` -> ``[B, 2 * emb_dims]`` (max-pool then avg-pool)."""
        x = points
        k = min(self.k, points.shape[1])  # a cloud with fewer than k points: all of them
        features = []
        for conv in self.edge_convs:
            x = conv(x, feature_knn(x, k))
            features.append(x)
        y = self.embed(torch.cat(features, dim=-1))  # [B, N, emb]
        y = F.leaky_relu(self.embed_bn(y.reshape(-1, y.shape[-1])).reshape(y.shape), self.negative_slope)
        return torch.cat([_max_pool(y, dim=1), y.mean(dim=1)], dim=-1)

    def forward(self, points: Tensor) -> Tensor:
        """``points`` ``[B, N, 3]`` float32 -> logits ``[B, num_classes]``."""
        return self.head(self.global_feature(points))


@register_model("dgcnn")
def dgcnn(num_classes: int = 40, **kwargs) -> DGCNN:
    """DGCNN (Wang et al. 2019), k=20, EdgeConv 64-64-128-256, emb 1024: the graph-based victim, 1.8 M parameters."""
    sizes = {"k": 20, "edge_channels": (64, 64, 128, 256), "emb_dims": 1024, "head": (512, 256)}
    return DGCNN(num_classes=num_classes, **{**sizes, **kwargs})


@register_model("dgcnn-small")
def dgcnn_small(num_classes: int = 40, **kwargs) -> DGCNN:
    """DGCNN with k=16 and emb 512: a lighter graph-based model for CPU runs and tests, 1.0 M parameters."""
    sizes = {"k": 16, "edge_channels": (64, 64, 128, 256), "emb_dims": 512, "head": (512, 256)}
    return DGCNN(num_classes=num_classes, **{**sizes, **kwargs})
