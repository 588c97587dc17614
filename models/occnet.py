"""Convolutional occupancy network, 3-plane variant (Peng et al., "Convolutional Occupancy
Networks", ECCV 2020): the surface model behind IF-Defense's ConvONet-Opt restoration.

    points [B, T, 3] in the padded unit cube (IF-Defense: a cloud fitted into +-0.45)
    -> PointNet with local pooling: fc_pos 3 -> 2h, 5 ResNet blocks (2h -> h); before every
       block but the first, each point's features are concatenated with the max of the
       features of the points sharing its cell on each of the 3 planes, summed over planes
    -> fc_c h -> c: per-point features, scatter-averaged into 3 axis-aligned feature planes
       (xz, xy, yz; R x R cells over the cube padded by ``padding``)
    -> one U-Net (depth d, f filters at the top, doubling per level; shared by the planes)
    -> planes [B, 3, c, R, R]
    query [B, Q, 3] -> bilinear samples of the 3 planes at the query's projections, summed
    -> decoder: fc_p 3 -> h plus, per block, fc_c[i](features); 5 ResNet blocks; ReLU;
       fc_out h -> 1: occupancy logits [B, Q]

IF-Defense's sizes (``convonet_3plane_mn40.yaml``): c = h = f = 32, R = 64, d = 4, padding
0.1; 2.0 M parameters (:func:`conv_onet`).

Bilinear sampling is ``F.grid_sample(align_corners=True, padding_mode="border")``, or the
same interpolation written with ``gather`` when it must be twice differentiable: an adaptive
attack that unrolls the restoration differentiates the gradient of the occupancy w.r.t. the
query points, and ``grid_sample``'s backward has no derivative. The cell index of a point
is ``floor(u * R)`` while sampling reads ``u * (R - 1)``, as in ConvONet.

Weights: parameter names follow ConvONet's ``ConvolutionalOccupancyNetwork`` so that its
checkpoints load with :func:`load_occnet_weights` (see that function for the keys).

Training data (:func:`occupancy_batch`), the IoU (:func:`occupancy_iou`) and the training run
(:func:`train_occupancy`) live in :mod:`models.occupancy_training` and are re-exported here.

Floor 1: imports torch and ``models`` only.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models import register_model
from models.checkpoints import load_state_dict_file
from models.occupancy_training import _f32, occupancy_batch, occupancy_iou, train_occupancy  # noqa: F401

__all__ = [
    "PLANES",
    "ConvOccupancyNetwork",
    "LocalDecoder",
    "LocalPoolPointNet",
    "PlaneUNet",
    "conv_onet",
    "load_occnet_weights",
    "normalize_coordinate",
    "occupancy_batch",
    "occupancy_iou",
    "sample_planes",
    "train_occupancy",
]

#: The three feature planes and the coordinate axes each one keeps (ConvONet's order).
PLANES: tuple[tuple[str, tuple[int, int]], ...] = (("xz", (0, 2)), ("xy", (0, 1)), ("yz", (1, 2)))
_PLANE_AXES = [axis for _, axes in PLANES for axis in axes]  # [0, 2, 0, 1, 1, 2]


def normalize_coordinate(points: Tensor, padding: float = 0.1) -> Tensor:
    """Cube coordinates -> each plane's ``[0, 1)`` coordinates (ConvONet's ``normalize_coordinate``).

    Args:
        points: ``[B, Q, 3]``, the unit cube ``[-0.5, 0.5]^3`` padded by ``padding``.

    Returns:
        ``[B, 3, Q, 2]``: for the planes xz, xy, yz, ``p / (1 + padding + 1e-5) + 0.5`` clamped
        to ``[0, 1 - 1e-5]`` (points outside the padded cube land on its border).
    """
    uv = points[..., _PLANE_AXES].view(*points.shape[:-1], 3, 2).transpose(1, 2)
    return (uv / (1.0 + padding + 1e-5) + 0.5).clamp(0.0, 1.0 - 1e-5)


def _cells(uv: Tensor, resolution: int) -> Tensor:
    """``[B, 3, Q, 2]`` plane coordinates -> ``[B, 3, Q]`` flat cell index ``col + R * row``."""
    ij = (uv.detach() * resolution).long()
    return ij[..., 0] + resolution * ij[..., 1]


def sample_planes(planes: Tensor, uv: Tensor, *, twice_differentiable: bool = False) -> Tensor:
    """Bilinear samples of every plane, summed over the planes.

    Args:
        planes: ``[B, 3, C, R, R]`` feature planes (row = the plane's second axis).
        uv: ``[B, 3, Q, 2]`` plane coordinates in ``[0, 1]`` (:func:`normalize_coordinate`).
        twice_differentiable: interpolate with ``gather`` (a graph that can be differentiated
            again, for unrolled attacks; ~4x slower on CPU) instead of ``F.grid_sample``.

    Returns:
        ``[B, Q, C]``: ``F.grid_sample(plane, 2 uv - 1, align_corners=True,
        padding_mode="border")`` summed over the 3 planes (both paths agree to float rounding).
    """
    b, p, c, r, _ = planes.shape
    q = uv.shape[2]
    if not twice_differentiable:
        grid = (2.0 * uv - 1.0).reshape(b * p, q, 1, 2)
        out = F.grid_sample(planes.reshape(b * p, c, r, r), grid, mode="bilinear", padding_mode="border",
                            align_corners=True)  # [B * 3, C, Q, 1]
        return out.view(b, p, c, q).sum(1).transpose(1, 2)
    pos = uv * (r - 1)
    base = pos.detach().floor().clamp(0, max(r - 2, 0))
    frac = pos - base  # [B, 3, Q, 2], differentiable
    col, row = base[..., 0].long(), base[..., 1].long()
    step = 1 if r > 1 else 0
    index = torch.stack([col + r * row, col + step + r * row, col + r * (row + step), col + step + r * (row + step)], 2)
    fx, fy = frac[..., 0], frac[..., 1]
    weight = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 2)  # [B, 3, 4, Q]
    flat = planes.reshape(b, p, c, r * r)
    corners = flat.gather(3, index.reshape(b, p, 1, 4 * q).expand(-1, -1, c, -1)).view(b, p, c, 4, q)
    return (corners * weight.unsqueeze(2)).sum((1, 3)).transpose(1, 2)


# --------------------------------------------------------------------------- building blocks


class ResnetBlockFC(nn.Module):
    """Fully connected ResNet block (ConvONet's): ``x + fc_1(relu(fc_0(relu(x))))``, with a
    bias-free linear shortcut when the widths differ; ``fc_1`` starts at zero."""

    def __init__(self, size_in: int, size_out: int | None = None, size_h: int | None = None) -> None:
        super().__init__()
        size_out = size_in if size_out is None else size_out
        size_h = min(size_in, size_out) if size_h is None else size_h
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = nn.Linear(size_in, size_out, bias=False) if size_in != size_out else None
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: Tensor) -> Tensor:
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        return (x if self.shortcut is None else self.shortcut(x)) + dx


class _DownConv(nn.Module):
    def __init__(self, cin: int, cout: int, pooling: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.pooling = pooling

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return (F.max_pool2d(x, 2) if self.pooling else x), x


class _UpConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.upconv = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv1 = nn.Conv2d(2 * cout, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, skip: Tensor, x: Tensor) -> Tensor:
        x = torch.cat([self.upconv(x), skip], 1)
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class PlaneUNet(nn.Module):
    """ConvONet's 2D U-Net: ``depth`` levels of two 3x3 conv + ReLU (``filters * 2^i`` channels,
    2x2 max pooling between levels), transposed-conv upsampling with concatenated skips, and
    a 1x1 output conv. ``[N, channels, R, R] -> [N, out_channels, R, R]``; R divisible by
    ``2^(depth - 1)``."""

    def __init__(self, channels: int = 32, out_channels: int = 32, depth: int = 4, filters: int = 32) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"U-Net depth must be >= 1; got {depth}")
        widths = [filters * 2**i for i in range(depth)]
        self.depth = depth
        self.down_convs = nn.ModuleList(
            _DownConv(channels if i == 0 else widths[i - 1], widths[i], pooling=i < depth - 1) for i in range(depth)
        )
        self.up_convs = nn.ModuleList(_UpConv(widths[i], widths[i - 1]) for i in range(depth - 1, 0, -1))
        self.conv_final = nn.Conv2d(widths[0], out_channels, 1)
        for module in self.modules():  # ConvONet's init: Xavier-normal convs, zero biases
            if type(module) is nn.Conv2d:
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 2 ** (self.depth - 1) or x.shape[-2] % 2 ** (self.depth - 1):
            raise ValueError(f"U-Net of depth {self.depth} needs planes divisible by {2 ** (self.depth - 1)}; "
                             f"got {list(x.shape[-2:])}")
        skips = []
        for down in self.down_convs:
            x, before_pool = down(x)
            skips.append(before_pool)
        for i, up in enumerate(self.up_convs):
            x = up(skips[-(i + 2)], x)
        return self.conv_final(x)


# --------------------------------------------------------------------------- encoder / decoder


class LocalPoolPointNet(nn.Module):
    """ConvONet's ``LocalPoolPointnet`` for 3 planes: points -> feature planes ``[B, 3, c, R, R]``."""

    def __init__(self, c_dim: int = 32, hidden_dim: int = 32, resolution: int = 64, unet_depth: int = 4,
                 unet_filters: int = 32, n_blocks: int = 5, padding: float = 0.1) -> None:
        super().__init__()
        self.c_dim, self.resolution, self.padding = c_dim, resolution, padding
        self.fc_pos = nn.Linear(3, 2 * hidden_dim)
        self.blocks = nn.ModuleList(ResnetBlockFC(2 * hidden_dim, hidden_dim) for _ in range(n_blocks))
        self.fc_c = nn.Linear(hidden_dim, c_dim)
        self.unet = PlaneUNet(c_dim, c_dim, unet_depth, unet_filters) if unet_depth > 0 else None

    def _flat_cells(self, points: Tensor, mask: Tensor | None) -> Tensor:
        """``[B, 3 T]`` index into the 3 planes' cells laid end to end, each plane followed by
        one spare cell that collects the masked-out points (dropped afterwards)."""
        b, t, _ = points.shape
        size = self.resolution**2 + 1
        cells = _cells(normalize_coordinate(points, self.padding), self.resolution)  # [B, 3, T]
        if mask is not None:
            cells = torch.where(mask.unsqueeze(1), cells, torch.full_like(cells, size - 1))
        offset = size * torch.arange(3, device=points.device).view(1, 3, 1)
        return (cells + offset).reshape(b, 3 * t)

    def _scatter(self, features: Tensor, index: Tensor, reduce: str) -> Tensor:
        """``features [B, T, C]``, ``index [B, 3 T]`` -> ``[B, C, 3 (R^2 + 1)]`` (empty cells 0)."""
        b, _, c = features.shape
        src = features.transpose(1, 2).repeat(1, 1, 3)  # [B, C, 3T], plane-major like index
        out = features.new_zeros(b, c, 3 * (self.resolution**2 + 1))
        return out.scatter_reduce(2, index.unsqueeze(1).expand(-1, c, -1), src, reduce=reduce, include_self=False)

    def forward(self, points: Tensor, mask: Tensor | None = None) -> Tensor:
        """``points [B, T, 3]`` (cube frame), ``mask [B, T]`` bool (False = ignore the point:
        clouds of different sizes in one batch) -> planes ``[B, 3, c_dim, R, R]``."""
        b, t, _ = points.shape
        index = self._flat_cells(points, mask)
        gather = index.unsqueeze(1)
        net = self.blocks[0](self.fc_pos(points))
        for block in self.blocks[1:]:
            pooled = self._scatter(net, index, "amax")
            pooled = pooled.gather(2, gather.expand(-1, net.shape[-1], -1)).view(b, -1, 3, t).sum(2)
            net = block(torch.cat([net, pooled.transpose(1, 2)], 2))
        c = self.fc_c(net)
        r = self.resolution
        planes = self._scatter(c, index, "mean").view(b, self.c_dim, 3, r * r + 1)[..., : r * r]
        planes = planes.permute(0, 2, 1, 3).reshape(b * 3, self.c_dim, r, r)
        if self.unet is not None:
            planes = self.unet(planes)
        return planes.view(b, 3, -1, r, r)


class LocalDecoder(nn.Module):
    """ConvONet's ``LocalDecoder``: query points + summed plane features -> occupancy logits."""

    def __init__(self, c_dim: int = 32, hidden_size: int = 32, n_blocks: int = 5, padding: float = 0.1) -> None:
        super().__init__()
        self.padding = padding
        self.fc_p = nn.Linear(3, hidden_size)
        self.fc_c = nn.ModuleList(nn.Linear(c_dim, hidden_size) for _ in range(n_blocks))
        self.blocks = nn.ModuleList(ResnetBlockFC(hidden_size) for _ in range(n_blocks))
        self.fc_out = nn.Linear(hidden_size, 1)

    def forward(self, query: Tensor, planes: Tensor, twice_differentiable: bool = False) -> Tensor:
        """``query [B, Q, 3]`` (cube frame), ``planes [B, 3, C, R, R]`` -> logits ``[B, Q]``."""
        uv = normalize_coordinate(query, self.padding)
        c = sample_planes(planes, uv, twice_differentiable=twice_differentiable)
        net = self.fc_p(query)
        for fc_c, block in zip(self.fc_c, self.blocks):
            net = block(net + fc_c(c))
        return self.fc_out(F.relu(net)).squeeze(-1)


class ConvOccupancyNetwork(nn.Module):
    """Occupancy of query points given a point cloud, both in the padded unit cube.

    ``encode(points [B, T, 3], mask=None) -> planes [B, 3, c, R, R]``;
    ``decode(query [B, Q, 3], planes, twice_differentiable=False) -> logits [B, Q]`` (inside:
    logit > 0; ``twice_differentiable``: see :func:`sample_planes`);
    ``forward(points, query) = decode(query, encode(points))``.
    """

    def __init__(self, c_dim: int = 32, hidden_dim: int = 32, resolution: int = 64, unet_depth: int = 4,
                 unet_filters: int = 32, n_blocks: int = 5, padding: float = 0.1) -> None:
        super().__init__()
        if resolution < 2 or (unet_depth > 0 and resolution % 2 ** (unet_depth - 1)):
            raise ValueError(f"plane resolution {resolution} must be >= 2 and divisible by 2^(unet_depth - 1) = "
                             f"{2 ** max(unet_depth - 1, 0)}")
        self.config = {"c_dim": c_dim, "hidden_dim": hidden_dim, "resolution": resolution, "unet_depth": unet_depth,
                       "unet_filters": unet_filters, "n_blocks": n_blocks, "padding": padding}
        self.encoder = LocalPoolPointNet(c_dim, hidden_dim, resolution, unet_depth, unet_filters, n_blocks, padding)
        self.decoder = LocalDecoder(c_dim, hidden_dim, n_blocks, padding)

    def encode(self, points: Tensor, mask: Tensor | None = None) -> Tensor:
        if points.dim() != 3 or points.shape[-1] != 3 or points.shape[1] < 1:
            raise ValueError(f"occupancy network input must be [B, T >= 1, 3]; got {list(points.shape)}")
        if mask is not None and mask.shape != points.shape[:2]:
            raise ValueError(f"mask must be [B, T] = {list(points.shape[:2])}; got {list(mask.shape)}")
        return self.encoder(points, mask)

    def decode(self, query: Tensor, planes: Tensor, twice_differentiable: bool = False) -> Tensor:
        return self.decoder(query, planes, twice_differentiable)

    def forward(self, points: Tensor, query: Tensor) -> Tensor:
        return self.decode(query, self.encode(points))


@register_model("conv-onet", tags=("defense-part", "occupancy"))
def conv_onet(c_dim: int = 32, hidden_dim: int = 32, resolution: int = 64, unet_depth: int = 4,
              unet_filters: int = 32, n_blocks: int = 5, padding: float = 0.1) -> ConvOccupancyNetwork:
    """Convolutional occupancy network, 3 planes 64 x 64, U-Net depth 4 (IF-Defense's ConvONet): 2.0 M parameters."""
    return ConvOccupancyNetwork(c_dim, hidden_dim, resolution, unet_depth, unet_filters, n_blocks, padding)


# --------------------------------------------------------------------------- weights


def load_occnet_weights(model: ConvOccupancyNetwork, path: str | os.PathLike[str]) -> ConvOccupancyNetwork:
    """Load a local ConvONet checkpoint into ``model`` (``torch.load(weights_only=True)``).

    Accepted: a plain state dict (IF-Defense's ``pretrain/convonet.pth``), or a dict holding
    it under ``"model"`` (ConvONet's ``CheckpointIO``: ``model_best.pt``), ``"model_state"``
    or ``"state_dict"``; ``module.`` prefixes are stripped. Keys (sizes c = h = f = 32, 5
    blocks, U-Net depth 4, levels i = 0..3, up levels j = 0..2)::

        encoder.fc_pos.{weight,bias}                      [2h, 3]
        encoder.blocks.{0-4}.fc_0 / fc_1 .{weight,bias}   [h, 2h] / [h, h]
        encoder.blocks.{0-4}.shortcut.weight              [h, 2h]
        encoder.fc_c.{weight,bias}                        [c, h]
        encoder.unet.down_convs.{i}.conv1 / conv2 .{weight,bias}
        encoder.unet.up_convs.{j}.upconv / conv1 / conv2 .{weight,bias}
        encoder.unet.conv_final.{weight,bias}             [c, f, 1, 1]
        decoder.fc_p.{weight,bias}                        [h, 3]
        decoder.fc_c.{0-4}.{weight,bias}                  [h, c]
        decoder.blocks.{0-4}.fc_0 / fc_1 .{weight,bias}   [h, h]
        decoder.fc_out.{weight,bias}                      [1, h]

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a state dict, or keys / shapes differ from ``model``'s (every
            missing, unexpected and mis-shaped key is listed).
    """
    load_state_dict_file(
        model, path, what="ConvONet", describe=_describe(model.config), containers=("model", "model_state", "state_dict"),
        advice=lambda _: "Build the network with the sizes the checkpoint was trained with "
                         "(defenses.if-defense.channels / plane_resolution / unet_depth).")
    return model


def _describe(config: dict[str, object], keys: Sequence[str] = ("c_dim", "resolution", "unet_depth")) -> str:
    return ", ".join(f"{k}={config[k]}" for k in keys)
