"""PU-Net point cloud upsampler (Yu et al., "PU-Net: Point Cloud Upsampling Network", CVPR 2018).

The architecture DUP-Net (Zhou et al., ICCV 2019) puts after statistical outlier removal,
in pure torch, with the parameter names and shapes of the published PyTorch weights (the
IF-Defense code base's ``pu-in_1024-up_4.pth``), so that ``load_punet_weights`` loads them:

    points [B, N, 3] (unit-sphere scale)
    -> 4 set-abstraction levels: N, N/2, N/4, N/8 centres (farthest point sampling, first
       centre = index 0), ball query (radii 0.05 / 0.1 / 0.2 / 0.3 at N = 1,024; 32
       neighbours), relative xyz + features -> shared MLP (1x1 conv with bias, ReLU, no
       batch-norm) 32-32-64 / 64-64-128 / 128-128-256 / 256-256-512, max over the group
    -> 3 feature-propagation layers: the features of levels 2-4 interpolated back to the N
       points (inverse distance, 3 nearest centres), each mapped to 64 channels
    -> per point: xyz (3) + level-1 features (64) + 3 x 64 = 259 channels
    -> ``up_ratio`` parallel expansion branches 259-256-128, stacked along the point axis
    -> coordinate regression 128-64-3 (the last layer linear): [B, up_ratio * N, 3]

The output points are regressed coordinates (not offsets), so the network must run on the
scale it was trained on: unit-sphere normalised objects, 1,024 points.

Faithful to the code that trained the published weights (its CUDA PointNet++ ops):

- the ball query keeps, of the points strictly inside the ball, the first ``nsample`` in
  storage order, and pads with the first one (vectorised: a ``topk`` of the indices of
  the points inside, no sort of the distances);
- the interpolation weights are ``1 / (d + 1e-8)`` with *plain* Euclidean distances ``d``
  (the CUDA ``three_nn`` returns square roots; the TF original used squared ones);
- level 1 keeps all ``N`` points as centres, each with its own features. (The reference
  obtains them by farthest point sampling, so it concatenates level-1 features in FPS
  order with the xyz in input order; the published weights learnt to ignore that
  permutation: reproducing it changes the real airplane's Chamfer by 0.1%.)

When a cloud has ``n != num_points`` points, the centres scale with it (``n``, ``n/2``,
``n/4``, ``n/8``) and the radii by ``sqrt(num_points / n)`` (the spacing of points on a
surface), so every ball holds about as many points as at the trained size
(:meth:`PUNet.level_sizes`).

One file just over ~400 lines on purpose: one architecture in the family-file layout (its
layers, which nothing else uses, then the network, its registered builder and its weights),
with the reproduction notes above as its specification.

Floor 1: imports torch, ``benchmark.core.geometry`` and ``models`` only.
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.core.geometry import farthest_point_sample, index_points
from benchmark.core.kernels import linear_act
from models import register_model
from models.checkpoints import load_state_dict_file

__all__ = [
    "PUNet",
    "ball_query_first",
    "flush_tiny_weights_",
    "load_punet_weights",
    "pu_net",
    "three_nn_interpolate",
]

#: Paper sizes of the 4 set-abstraction levels at ``num_points = 1024``:
#: (centre fraction of N, radius, neighbours, MLP widths).
PU_LEVELS: tuple[tuple[int, float, int, tuple[int, ...]], ...] = (
    (1, 0.05, 32, (32, 32, 64)),
    (2, 0.1, 32, (64, 64, 128)),
    (4, 0.2, 32, (128, 128, 256)),
    (8, 0.3, 32, (256, 256, 512)),
)
#: Weights below this magnitude are zeroed on loading (:func:`flush_tiny_weights_`): each adds
#: less than ~1e-17 to an output, and products with them are subnormal floats.
NEGLIGIBLE_WEIGHT = 1e-20
#: Elements of one ``[B, chunk, N]`` distance block (4 MiB float32): bounded memory at large N, and
#: each block is searched while in cache (the four levels' ball queries on 16 clouds of 1,024 points,
#: 2 threads: 128 ms with 32 Mi-element blocks and a top-32, 45 ms with these and ``nonzero``).
_MAX_BLOCK_ELEMENTS = 2**20


# --------------------------------------------------------------------------- building blocks


class _Conv1x1(nn.Module):
    """A 1x1 ``Conv2d`` (the checkpoint's layout) applied channels-last as a linear map.

    ``x [..., in] -> [..., out]``; ReLU after it unless ``activation`` is False.
    """

    def __init__(self, in_channels: int, out_channels: int, activation: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return linear_act(x, self.conv.weight.flatten(1), self.conv.bias, self.activation)


class SharedMLP(nn.Module):
    """Point-wise MLP ``widths[0] -> ... -> widths[-1]`` as layers ``layer0, layer1, ...``
    (each a 1x1 conv with bias; ReLU after every layer unless ``activation`` is False)."""

    def __init__(self, widths: Sequence[int], activation: bool = True) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"SharedMLP needs at least an input and an output width; got {list(widths)}")
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            self.add_module(f"layer{i}", _Conv1x1(a, b, activation))
        self.out_channels = int(widths[-1])

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., widths[0]] -> [..., widths[-1]]``."""
        for layer in self.children():
            x = layer(x)
        return x


def _chunk(batch: int, n: int) -> int:
    return max(1, _MAX_BLOCK_ELEMENTS // max(1, batch * n))


@torch.no_grad()
def ball_query_first(xyz: Tensor, centres: Tensor, radius: float, nsample: int) -> Tensor:
    """The first ``nsample`` points (in storage order) strictly within ``radius`` of each centre.

    As the CUDA ball query that trained PU-Net: groups are padded with their first point;
    a centre with no point inside its ball (impossible when centres are points of ``xyz``)
    gets its nearest point. Vectorised, in chunks of centres: ``cdist``, then the hits of
    every ball in storage order (``nonzero`` lists them row-major) ranked within their ball,
    so the cost follows the points inside (a few per ball at the first levels), not ``N``.

    Args:
        xyz: ``[B, N, 3]`` points.
        centres: ``[B, S, 3]`` ball centres.
        radius: ball radius (cloud units, not squared).
        nsample: indices per ball.

    Returns:
        ``[B, S, nsample]`` long indices into ``xyz``; the members of a ball first (distinct),
        then copies of its first member.
    """
    batch, n, _ = xyz.shape
    k = min(nsample, n)
    slots = torch.arange(k, device=xyz.device)
    parts = []
    step = _chunk(batch, n)
    for start in range(0, centres.shape[1], step):
        dist = torch.cdist(centres[:, start : start + step], xyz)  # [B, c, N]
        rows = batch * dist.shape[1]
        hit = (dist < radius).view(rows, n).nonzero()  # [H, 2] (ball, point), row-major: storage order
        ball, point = hit[:, 0], hit[:, 1]
        inside = torch.bincount(ball, minlength=rows)  # [rows]
        rank = torch.arange(ball.shape[0], device=xyz.device) - (inside.cumsum(0) - inside).index_select(0, ball)
        keep = rank < k
        idx = torch.zeros(rows, k, dtype=torch.long, device=xyz.device)
        idx.index_put_((ball[keep], rank[keep]), point[keep])
        idx, count = idx.view(batch, -1, k), inside.clamp(max=k).view(batch, -1, 1)
        first = idx[..., :1]
        if not bool((count > 0).all()):  # an empty ball: its nearest point instead
            first = torch.where(count > 0, first, dist.argmin(-1, keepdim=True))
        parts.append(torch.where(slots < count, idx, first))
    idx = torch.cat(parts, dim=1)
    if k < nsample:
        idx = torch.cat([idx, idx[..., :1].expand(-1, -1, nsample - k)], dim=-1)
    return idx


def three_nn_interpolate(points: Tensor, centres: Tensor, features: Tensor) -> Tensor:
    """Inverse-distance interpolation of ``features`` from the 3 nearest centres.

    Weights ``1 / (d + 1e-8)`` with plain Euclidean ``d``, normalised to sum 1 (the CUDA
    ``three_nn`` / ``three_interpolate`` pair that trained PU-Net).

    Args:
        points: ``[B, N, 3]`` where features are wanted.
        centres: ``[B, S, 3]`` where they are known.
        features: ``[B, S, C]``.

    Returns:
        ``[B, N, C]``; differentiable w.r.t. ``features`` (the neighbour choice is not).
    """
    batch, n, _ = points.shape
    s = centres.shape[1]
    if s == 1:
        return features.expand(-1, n, -1)
    k = min(3, s)
    parts_idx, parts_w = [], []
    step = _chunk(batch, s)
    for start in range(0, n, step):
        with torch.no_grad():
            dist = torch.cdist(points[:, start : start + step], centres)  # [B, c, S]
            d, idx = dist.topk(k, dim=-1, largest=False, sorted=False)
        parts_idx.append(idx)
        parts_w.append(d)
    idx = torch.cat(parts_idx, dim=1)  # [B, N, k]
    weight = 1.0 / (torch.cat(parts_w, dim=1) + 1e-8)
    weight = weight / weight.sum(-1, keepdim=True)
    return (index_points(features, idx) * weight.unsqueeze(-1)).sum(2)


def _distinct_members_max(projected: Tensor, centre_term: Tensor, idx: Tensor, layers: Sequence[nn.Module]) -> Tensor:
    """A set-abstraction MLP max-pooled over each group's distinct members only (inference).

    A ball holding fewer than K points is padded with copies of its first member, and a copy
    changes no max: the MLP runs on the distinct (centre, member) pairs alone, ragged across
    groups, and their outputs are max-reduced per group. The same values as running it on all
    ``K`` slots up to float rounding; on SynthShapes at 1,024 points the balls hold 3.7 / 12 /
    22 / 24 of 32 members on average at the four levels, about a third of PU-Net's work.

    Args:
        projected: ``[B, n, C1]`` first-layer projection of every input point (no bias).
        centre_term: ``[B, S, C1]`` ``W_xyz c - b`` per centre.
        idx: ``[B, S, K]`` ball members (:func:`ball_query_first`: distinct members first, then
            copies of the first one).
        layers: the MLP's layers after the first.

    Returns:
        ``[B, S, C]``, ``C`` the last layer's width.
    """
    batch, n, width = projected.shape
    groups, k = centre_term.shape[1], idx.shape[2]
    distinct = torch.ones_like(idx, dtype=torch.bool)
    distinct[..., 1:] = idx[..., 1:] != idx[..., :1]  # members are distinct; only padding repeats slot 0
    slots = distinct.view(-1).nonzero().squeeze(1)  # [P] positions in the flattened [B, S, K]
    group = slots // k  # [P] in [0, B * S)
    rows = (idx + (torch.arange(batch, device=idx.device) * n).view(batch, 1, 1)).view(-1).index_select(0, slots)
    out = projected.reshape(batch * n, width).index_select(0, rows)
    out = F.relu(out.sub_(centre_term.reshape(batch * groups, width).index_select(0, group)), inplace=True)
    for layer in layers:
        out = layer(out)  # [P, C]
    pooled = out.new_full((batch * groups, out.shape[1]), -math.inf)
    pooled.scatter_reduce_(0, group.unsqueeze(1).expand_as(out), out, "amax")
    return pooled.view(batch, groups, -1)


class PUSetAbstraction(nn.Module):
    """One PU-Net set-abstraction level (single scale; the MLP sits at ``mlps.0``).

    Args:
        fraction: centres = ``n // fraction`` of the level's input points (at least 1).
        radius: ball radius at the trained cloud size.
        nsample: neighbours per ball.
        in_channels: feature width of the input points (0 = coordinates only).
        mlp: widths of the shared MLP after the 3 relative coordinates.
    """

    def __init__(self, fraction: int, radius: float, nsample: int, in_channels: int, mlp: Sequence[int]) -> None:
        super().__init__()
        self.fraction = fraction
        self.radius = radius
        self.nsample = nsample
        self.mlps = nn.ModuleList([SharedMLP([in_channels + 3, *mlp])])
        self.out_channels = self.mlps[0].out_channels

    def forward(
        self, xyz: Tensor, features: Tensor | None, num_centres: int, radius: float
    ) -> tuple[Tensor, Tensor]:
        """Abstract ``xyz [B, n, 3]`` (features ``[B, n, C]`` or None) at ``num_centres`` centres
        (farthest point sampling from index 0; all points, in storage order, when
        ``num_centres == n``) with balls of ``radius``.

        Returns:
            ``(centres [B, S, 3], features [B, S, mlp[-1]])``.
        """
        if num_centres >= xyz.shape[1]:
            centres = xyz
        else:
            centres = index_points(xyz, farthest_point_sample(xyz.detach(), num_centres))
        idx = ball_query_first(xyz.detach(), centres.detach(), radius, self.nsample)
        # The first layer on [xyz_j - c_i, f_j] is W_xyz xyz_j + W_f f_j - W_xyz c_i + b: project
        # every point once, then gather (K times fewer multiplications than gather-then-project).
        first, *rest = self.mlps[0].children()
        weight, bias = first.conv.weight.flatten(1), first.conv.bias
        projected = F.linear(xyz, weight[:, :3])  # [B, n, C1]
        if features is not None:
            projected = projected + F.linear(features, weight[:, 3:])
        centre_term = F.linear(centres, weight[:, :3], -bias)  # [B, S, C1]
        if not torch.is_grad_enabled() or not (projected.requires_grad or centre_term.requires_grad):
            return centres, _distinct_members_max(projected, centre_term, idx, rest)
        out = F.relu(index_points(projected, idx) - centre_term.unsqueeze(2), inplace=True)  # [B, S, K, C1]
        for layer in rest:
            out = layer(out)
        return centres, out.max(dim=2).values


class PUFeaturePropagation(nn.Module):
    """Interpolate a level's features back to the input points, then a 1-layer MLP (``mlp``)."""

    def __init__(self, in_channels: int, out_channels: int = 64) -> None:
        super().__init__()
        self.mlp = SharedMLP([in_channels, out_channels])

    def forward(self, points: Tensor, centres: Tensor, features: Tensor) -> Tensor:
        """``points [B, N, 3]``, ``centres [B, S, 3]``, ``features [B, S, C]`` -> ``[B, N, out]``.

        ``mlp(interpolate(features))``, computed as ``act(interpolate(W features) + b)`` for the
        first layer: the interpolation weights of a point sum to 1, so the linear map commutes
        with it (equal up to float rounding), and the ``[B, N, 3, C]`` gather then moves the
        layer's ``out`` channels instead of ``C`` (C = 128 / 256 / 512 at PU-Net's levels).
        """
        first, *rest = self.mlp.children()
        projected = F.linear(features, first.conv.weight.flatten(1))  # [B, S, out], no bias
        x = three_nn_interpolate(points, centres, projected) + first.conv.bias
        if first.activation:
            x = F.relu(x, inplace=not x.requires_grad)
        for layer in rest:
            x = layer(x)
        return x


# --------------------------------------------------------------------------- the network


class PUNet(nn.Module):
    """PU-Net: ``[B, N, 3]`` points -> ``[B, up_ratio * N, 3]`` upsampled points.

    Args:
        num_points: the cloud size the radii are given for (1,024 for the published weights);
            other sizes scale centres and radii (module docstring).
        up_ratio: output points per input point (number of expansion branches).
        levels: ``(centre fraction, radius, neighbours, MLP widths)`` per set-abstraction
            level (paper: :data:`PU_LEVELS`).
        propagate_channels: width of each propagated level's features (paper: 64).
        expansion: widths of each expansion branch after the concatenation (paper: 256-128).
        regression: hidden widths of the coordinate regression (paper: 64), then 3.
    """

    def __init__(
        self,
        num_points: int = 1024,
        up_ratio: int = 4,
        levels: Sequence[tuple[int, float, int, Sequence[int]]] = PU_LEVELS,
        propagate_channels: int = 64,
        expansion: Sequence[int] = (256, 128),
        regression: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        if num_points < 1 or up_ratio < 1:
            raise ValueError(f"PU-Net needs num_points >= 1 and up_ratio >= 1; got {num_points}, {up_ratio}")
        if levels[0][0] != 1:
            raise ValueError("PU-Net's first level keeps every point as a centre (fraction 1)")
        self.num_points = int(num_points)
        self.up_ratio = int(up_ratio)
        self.SA_modules = nn.ModuleList()
        width = 0
        for fraction, radius, nsample, mlp in levels:
            level = PUSetAbstraction(fraction, radius, nsample, width, mlp)
            self.SA_modules.append(level)
            width = level.out_channels
        self.FP_Modules = nn.ModuleList(
            [PUFeaturePropagation(level.out_channels, propagate_channels) for level in self.SA_modules[1:]]
        )
        concat = 3 + self.SA_modules[0].out_channels + propagate_channels * len(self.FP_Modules)
        self.FC_Modules = nn.ModuleList([SharedMLP([concat, *expansion]) for _ in range(up_ratio)])
        widths = [expansion[-1], *regression]
        self.pcd_layer = nn.Sequential(
            *[SharedMLP([a, b]) for a, b in itertools.pairwise(widths)],
            SharedMLP([widths[-1], 3], activation=False),
        )

    @torch.no_grad()
    def init_identity_(self, offset_scale: float = 0.1) -> PUNet:
        """Initialise so that every branch starts by copying its input point, plus small offsets.

        Six channels of each expansion branch and of the regression carry ``[x, y, z, -x,
        -y, -z]`` through the ReLUs (``relu(x) - relu(-x) = x``); the last layer's other
        weights are scaled by ``offset_scale``, so the initial output is the input repeated
        ``up_ratio`` times plus small learnt-from-features offsets (which also tell the
        branches apart). Same parameters and names: a training shortcut, not a new
        architecture (the regressed coordinates then start on the input surface instead of
        collapsed at one point).
        """
        eye = torch.eye(3)
        carry = torch.cat([eye, -eye])  # [6, 3]: the six carried channels from xyz
        for branch in self.FC_Modules:
            first, *rest = branch.children()
            first.conv.weight[:6] = 0.0
            first.conv.weight[:6, :3, 0, 0] = carry  # xyz are the first 3 concatenated channels
            first.conv.bias[:6] = 0.0
            for layer in rest:
                self._carry_(layer)
        hidden, last = list(self.pcd_layer.children())[:-1], list(self.pcd_layer.children())[-1]
        for mlp in hidden:
            for layer in mlp.children():
                self._carry_(layer)
        out = last.layer0.conv
        out.weight.mul_(offset_scale)
        out.bias.zero_()
        out.weight[:, :6] = 0.0
        out.weight[:, :6, 0, 0] = torch.cat([eye, -eye], dim=1)  # x = relu(x) - relu(-x)
        return self

    @staticmethod
    def _carry_(layer: _Conv1x1) -> None:
        """Make output channels 0-5 of ``layer`` copies of its input channels 0-5."""
        w = layer.conv.weight
        w[:6] = 0.0
        w[:6, :6, 0, 0] = torch.eye(6)
        layer.conv.bias[:6] = 0.0

    def level_sizes(self, n: int) -> list[tuple[int, float]]:
        """``(centres, radius)`` of each set-abstraction level for clouds of ``n`` points:
        centres ``n // fraction`` (at least 1), radii scaled by ``sqrt(num_points / n)``."""
        scale = math.sqrt(self.num_points / n)
        return [(max(1, n // level.fraction), level.radius * scale) for level in self.SA_modules]

    def point_features(self, points: Tensor) -> Tensor:
        """Per-point features before expansion: ``[B, N, 3] -> [B, N, 259]``."""
        xyz = points
        l_xyz, l_feats = [], []
        feats: Tensor | None = None
        for level, (count, radius) in zip(self.SA_modules, self.level_sizes(points.shape[1])):
            xyz, feats = level(xyz, feats, min(count, xyz.shape[1]), radius)
            l_xyz.append(xyz)
            l_feats.append(feats)
        up = [fp(points, l_xyz[i + 1], l_feats[i + 1]) for i, fp in enumerate(self.FP_Modules)]
        return torch.cat([points, l_feats[0], *up], dim=-1)

    def forward(self, points: Tensor) -> Tensor:
        """``points [B, N, 3]`` float32, unit-sphere scale -> ``[B, up_ratio * N, 3]``.

        Output point ``r * N + i`` comes from input point ``i`` through branch ``r``.
        """
        if points.dim() != 3 or points.shape[-1] != 3 or points.shape[1] < 1:
            raise ValueError(f"PU-Net input must be [B, N >= 1, 3]; got {list(points.shape)}")
        feats = self.point_features(points)
        expanded = torch.cat([branch(feats) for branch in self.FC_Modules], dim=1)  # [B, rN, 128]
        return self.pcd_layer(expanded)


@register_model("pu-net", tags=("upsampler",))
def pu_net(num_points: int = 1024, up_ratio: int = 4, **kwargs) -> PUNet:
    """PU-Net point upsampler (Yu et al. 2018), x4, the layout of the published DUP-Net weights: 0.8 M parameters."""
    return PUNet(num_points=num_points, up_ratio=up_ratio, **kwargs)


# --------------------------------------------------------------------------- weights


def load_punet_weights(model: PUNet, path: str | os.PathLike[str]) -> PUNet:
    """Load a local PU-Net checkpoint (a plain state dict, ``torch.load(weights_only=True)``).

    A dict holding the state under ``"model_state"`` / ``"state_dict"`` (training
    checkpoints) and ``module.`` prefixes (DataParallel) are accepted too.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a state dict, or its keys / shapes differ from
            ``model``'s; the message lists every missing, unexpected and mis-shaped key.
    """
    def advice(state: Mapping[str, Tensor]) -> str:
        branches = {k.split(".")[1] for k in state if k.startswith("FC_Modules.")}
        if len(branches) != model.up_ratio:
            return (f"The file has {len(branches)} expansion branches: it upsamples x{len(branches)}, "
                    f"this model x{model.up_ratio}; build it with up_ratio={len(branches)}.")
        return "Build the model with the sizes the checkpoint was trained with, or pass a checkpoint of this layout."

    load_state_dict_file(model, path, what="PU-Net", describe=f"up_ratio={model.up_ratio}", advice=advice)
    return flush_tiny_weights_(model)


@torch.no_grad()
def flush_tiny_weights_(model: nn.Module) -> nn.Module:
    """Zero the negligible parameters (``|w| < NEGLIGIBLE_WEIGHT = 1e-20``), in place; returns ``model``.

    Weight decay leaves dead weights tiny: the published PU-Net holds ~390,000 subnormal ones
    (|w| < 1.2e-38) and ~80,000 more below 1e-20, and CPU arithmetic on subnormal numbers
    (the weights, and their products with activations) made its forward 25x slower here
    (2 s instead of 0.08 s per 1,024-point cloud). Each zeroed weight changed an output by
    less than ~1e-17 (unit-sphere coordinates are ~0.1-1).
    """
    for param in model.parameters():
        if param.is_floating_point():
            param.masked_fill_(param.abs() < NEGLIGIBLE_WEIGHT, 0.0)
    return model
