"""Point clouds as patch tokens, Point-BERT / Uni3D style: FPS centres with their kNN groups
(``group_points``), the mini-PointNet patch embedding (``GroupEncoder``) and the token
sequence ``[CLS, prompts, patches]`` entering a transformer (``token_sequence``), with the
input checks the encoders share.

Shared by :class:`models.point_transformer.PointTransformer` and :mod:`models.uni3d`; every
name is also importable from :mod:`models.point_transformer`.
Floor 1: imports torch and ``benchmark.core.geometry`` only.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from benchmark.core.geometry import farthest_point_sample, index_points, knn

__all__ = ["GroupEncoder", "check_points", "expand_prompts", "group_points", "token_sequence"]


# --------------------------------------------------------------------------- grouping


def group_points(points: Tensor, num_groups: int, group_size: int) -> tuple[Tensor, Tensor]:
    """Split clouds into local patches: FPS centres and their k nearest points.

    Indices (FPS from index 0, kNN by ``cdist`` + ``topk``) are chosen without autograd; the
    coordinates are then gathered from ``points``, so gradients reach every gathered point.

    Args:
        points: ``[B, N, 3]`` float, ``N >= max(num_groups, group_size)``.
        num_groups: ``G`` centres per cloud.
        group_size: ``K`` neighbours per centre (the centre itself is one of them).

    Returns:
        ``(neighbourhoods, centres)``: ``[B, G, K, 3]`` neighbour coordinates minus their
        centre, and ``[B, G, 3]`` centre coordinates (FPS order).
    """
    with torch.no_grad():
        detached = points.detach()
        centre_idx = farthest_point_sample(detached, num_groups)  # [B, G]
        neighbour_idx, _ = knn(detached, group_size, query=index_points(detached, centre_idx))  # [B, G, K]
    centres = index_points(points, centre_idx)
    neighbourhoods = index_points(points, neighbour_idx) - centres.unsqueeze(2)
    return neighbourhoods, centres


def check_points(points: Tensor, num_groups: int, group_size: int, what: str) -> None:
    """Raise ``ValueError`` unless ``points`` is a float ``[B, N, 3]`` with ``N >= max(G, K)``.

    ``what`` names the encoder in the message ("this PointTransformer").
    """
    if not isinstance(points, Tensor) or points.dim() != 3 or points.shape[-1] != 3:
        shape = list(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"points must be a float tensor [B, N, 3]; got {shape}")
    if not points.is_floating_point():
        raise ValueError(f"points must be floating point (float32); got {points.dtype}")
    need = max(num_groups, group_size)
    if points.shape[1] < need:
        raise ValueError(
            f"points has N={points.shape[1]} points per cloud but {what} needs "
            f"N >= {need} (num_groups={num_groups}, group_size={group_size}); "
            "resample the clouds or build a variant with fewer/smaller groups"
        )


def expand_prompts(prompts: Tensor | None, batch: int, width: int) -> Tensor | None:
    """Prompt tokens ``[P, W]`` (shared) or ``[B, P, W]`` -> ``[B, P, W]``; None or ``P == 0`` -> None.

    Raises:
        ValueError: another shape, a width other than ``width``, or a batch other than ``batch``.
    """
    if prompts is None:
        return None
    if not isinstance(prompts, Tensor) or prompts.dim() not in (2, 3) or prompts.shape[-1] != width:
        shape = list(prompts.shape) if isinstance(prompts, Tensor) else type(prompts).__name__
        raise ValueError(f"prompts must be [B, P, {width}] or [P, {width}] (width); got {shape}")
    if prompts.dim() == 2:
        prompts = prompts.unsqueeze(0).expand(batch, -1, -1)
    elif prompts.shape[0] != batch:
        raise ValueError(
            f"prompts [B, P, W] has B={prompts.shape[0]} but points has B={batch}; "
            "pass [P, W] to share one set of prompts across the batch"
        )
    return prompts if prompts.shape[1] > 0 else None


def token_sequence(cls: Tensor, patches: Tensor, prompts: Tensor | None = None) -> Tensor:
    """``[CLS, prompts, patches]``: the sequence entering the first block (MRPD's shallow prompts).

    Args:
        cls: ``[1, 1, W]``, the class token with its positional embedding already added.
        patches: ``[B, G, W]``, patch tokens with their positional embeddings added.
        prompts: ``[P, W]`` (shared), ``[B, P, W]`` or None; they enter unchanged (a zero
            positional embedding), right after CLS.

    Returns:
        ``[B, 1 + P + G, W]``.
    """
    batch = patches.shape[0]
    parts = [cls.expand(batch, -1, -1)]
    prompts = expand_prompts(prompts, batch, patches.shape[-1])
    if prompts is not None:
        parts.append(prompts.to(patches.dtype))
    parts.append(patches)
    return torch.cat(parts, dim=1)


class _BatchNormLast(nn.BatchNorm1d):
    """BatchNorm1d over every leading dim of a channels-last tensor ``[..., C]``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class GroupEncoder(nn.Module):
    """Point-BERT's mini-PointNet patch embedding ("Encoder"), channels last.

    ``first_conv``: shared MLP ``3 -> h0 (BN, ReLU) -> h1``; max-pool over the group;
    the pooled feature is concatenated to every point (``2 * h1``); ``second_conv``: shared
    MLP ``2 * h1 -> h2 (BN, ReLU) -> out_dim``; max-pool again. Point-BERT / Uni3D use
    ``hidden = (128, 256, 512)``. BatchNorm uses running statistics in eval mode, so an
    eval-mode encoder treats every sample independently.

    Args:
        out_dim: ``E``, the patch feature size.
        hidden: ``(h0, h1, h2)``.
    """

    def __init__(self, out_dim: int, hidden: Sequence[int] = (128, 256, 512)) -> None:
        super().__init__()
        h0, h1, h2 = (int(h) for h in hidden)
        self.out_dim = int(out_dim)
        # Same indices as Uni3D's nn.Sequential(Conv1d, BatchNorm1d, ReLU, Conv1d): keys map 1:1.
        self.first_conv = nn.Sequential(nn.Linear(3, h0), _BatchNormLast(h0), nn.ReLU(), nn.Linear(h0, h1))
        self.second_conv = nn.Sequential(
            nn.Linear(2 * h1, h2), _BatchNormLast(h2), nn.ReLU(), nn.Linear(h2, self.out_dim)
        )

    def forward(self, neighbourhoods: Tensor) -> Tensor:
        """``neighbourhoods`` ``[B, G, K, 3]`` (relative coordinates) -> ``[B, G, E]``."""
        feature = self.first_conv(neighbourhoods)  # [B, G, K, h1]
        pooled = feature.amax(dim=2, keepdim=True).expand_as(feature)
        feature = self.second_conv(torch.cat([pooled, feature], dim=-1))  # [B, G, K, E]
        return feature.amax(dim=2)
