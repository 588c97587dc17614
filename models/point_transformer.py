"""The prompt-capable point transformer: a Point-BERT / Uni3D-style encoder into a CLIP space.

    points [B, N, 3] -> FPS centres [B, G, 3] + kNN groups [B, G, K, 3] (relative to centre)
    -> mini-PointNet per group [B, G, E] -> Linear to width [B, G, W] (+ MLP(centre) pos)
    -> [CLS, prompts, patches] -> depth x pre-norm transformer block -> LayerNorm
    -> CLS output (or CLS ++ max over patches) -> Linear into the embedding space [B, D]

Prompt tokens (MRPD's point prompt, PROTOCOL.md section 4) go in once, right after CLS,
before the first block, with a zero positional embedding; ``prompts=None`` is the plain
encoder. The registered variants at the bottom return an
:class:`~models.heads.EmbeddingClassifier` (the encoder plus a linear or text-embedding head).
The grouping and prompt helpers (``group_points``, ``token_sequence``, ``GroupEncoder``, ...:
:mod:`models.point_patches`, re-exported here) and the head helpers here (``with_head``,
``HEAD_KWARGS``) are shared with :mod:`models.uni3d`, the encoders of Uni3D's checkpoints.

Floor 1: imports torch and ``models`` only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models import register_model
from models.heads import EmbeddingClassifier, make_head
from models.point_patches import (  # noqa: F401  (re-exported: models.uni3d and old callers import them here)
    GroupEncoder,
    _BatchNormLast,
    check_points,
    expand_prompts,
    group_points,
    token_sequence,
)

__all__ = [
    "HEAD_KWARGS",
    "Attention",
    "Block",
    "DropPath",
    "GroupEncoder",
    "PointTransformer",
    "check_points",
    "expand_prompts",
    "group_points",
    "token_sequence",
    "point_transformer_student",
    "point_transformer_student_paper",
    "point_transformer_teacher",
    "point_transformer_teacher_paper",
    "with_head",
]

_LN_EPS = 1e-6  # timm / EVA LayerNorm epsilon, so Uni3D weights behave identically


# --------------------------------------------------------------------------- transformer


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1); got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[B, ...]`` -> same shape, whole samples zeroed and the rest rescaled."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    """Multi-head self-attention, batch first, fused ``qkv`` projection (timm/EVA names).

    Args:
        width: ``W``, divisible by ``num_heads``.
        num_heads: heads; each has ``W / num_heads`` channels.
        qkv_bias: bias on the ``qkv`` projection (EVA: q and v biases, zero k bias).
    """

    def __init__(self, width: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} must be divisible by num_heads {num_heads}")
        self.num_heads = int(num_heads)
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[B, L, W]`` -> ``[B, L, W]``."""
        b, length, width = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, H, L, W / H]
        return self.proj(out.transpose(1, 2).reshape(b, length, width))


class Mlp(nn.Module):
    """Transformer MLP ``W -> hidden (GELU) -> W`` (timm ``Mlp`` names: ``fc1``, ``fc2``)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[..., W]`` -> ``[..., W]``."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + mlp(LN(x))`` (timm/EVA names)."""

    def __init__(
        self, width: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=_LN_EPS)
        self.attn = Attention(width, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(width, eps=_LN_EPS)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[B, L, W]`` -> ``[B, L, W]``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------- the encoder


class PointTransformer(nn.Module):
    """Point-BERT / Uni3D-style point cloud encoder with optional shallow prompt tokens.

    Token sequence fed to the first block: ``[CLS + cls_pos, prompts + 0, patch + pos(centre)]``
    (length ``1 + P + G``). The output is the final-LayerNorm'd **CLS token** projected by
    ``trans2embed`` into the shared embedding space (``pool="cls"``, the default: what Uni3D
    and the MRPD code do, so Uni3D's ``trans2embed`` loads unchanged). ``pool="cls+max"``
    concatenates the max over the patch tokens (Point-BERT's classifier input; prompts are
    excluded from the max) and doubles ``trans2embed``'s input. The embedding is not
    normalised; heads normalise.

    Args:
        width: ``W``, the token size (prompts must be ``W`` wide).
        depth: transformer blocks.
        num_heads: attention heads (``W % num_heads == 0``).
        num_groups: ``G`` FPS centres (patches) per cloud.
        group_size: ``K`` nearest neighbours per patch.
        embed_dim: ``D``, the shared (CLIP) embedding size.
        drop_path: stochastic-depth rate of the last block (linear from 0 over the blocks).
        mlp_ratio: block MLP hidden size / W.
        encoder_dim: ``E``, the mini-PointNet's output size (default ``W``; Uni3D uses 512),
            bridged to ``W`` by the ``encoder2trans`` linear layer.
        encoder_hidden: the mini-PointNet's hidden sizes ``(h0, h1, h2)``.
        pool: ``"cls"`` or ``"cls+max"`` (see above).

    Shapes: ``encode(points [B, N, 3], prompts [B, P, W] | [P, W] | None) -> [B, D]`` with
    ``N >= max(G, K)``. Vectorised over the batch; gradients flow to ``points`` (and to
    ``prompts``) through the gathered coordinates. Freeze the backbone with
    ``requires_grad_(False)`` **and** keep it in ``eval()``: in train mode BatchNorm would
    use (and update) batch statistics.

    Uni3D weights
    -------------
    The official Uni3D checkpoints (Ti, S, B, L, g) load into :class:`models.uni3d.Uni3DEncoder`
    (registered as ``uni3d-ti`` ... ``uni3d-g``), which keeps Uni3D's exact layout (Conv1d
    mini-PointNet on xyz + constant colour, timm's EVA / EVA02 blocks) and this class's
    interface (``width``, ``encode(points, prompts)``, prompts right after CLS). This class
    is the light, trainable-from-scratch sibling; its ``-paper`` variants have Uni3D-S / -B
    sizes but not their block types.
    """

    def __init__(
        self,
        width: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        num_groups: int = 32,
        group_size: int = 16,
        embed_dim: int = 256,
        drop_path: float = 0.0,
        mlp_ratio: float = 4.0,
        encoder_dim: int | None = None,
        encoder_hidden: Sequence[int] = (128, 256, 512),
        pool: str = "cls",
    ) -> None:
        super().__init__()
        if pool not in ("cls", "cls+max"):
            raise ValueError(f"unknown pool {pool!r}; expected 'cls' or 'cls+max'")
        for name, value in (("width", width), ("depth", depth), ("num_heads", num_heads),
                            ("num_groups", num_groups), ("group_size", group_size), ("embed_dim", embed_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        self.width = width
        self.depth = depth
        self.num_heads = num_heads
        self.num_groups = num_groups
        self.group_size = group_size
        self.embed_dim = embed_dim
        self.pool = pool
        encoder_dim = int(encoder_dim or width)

        self.encoder = GroupEncoder(encoder_dim, encoder_hidden)
        self.encoder2trans = nn.Linear(encoder_dim, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        rates = torch.linspace(0.0, float(drop_path), depth).tolist()
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio, rate) for rate in rates)
        self.norm = nn.LayerNorm(width, eps=_LN_EPS)
        self.trans2embed = nn.Linear(width * (2 if pool == "cls+max" else 1), embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm ViT init: truncated normal (std 0.02) weights, zero biases, unit LayerNorms."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
                module.reset_parameters()
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)

    # -- pieces -----------------------------------------------------------------------------
    def tokens(self, points: Tensor, prompts: Tensor | None = None) -> Tensor:
        """The token sequence entering the first block, positional embeddings added.

        Args:
            points: ``[B, N, 3]`` float32.
            prompts: ``[B, P, W]``, ``[P, W]`` (shared by the batch) or None.

        Returns:
            ``[B, 1 + P + G, W]``: ``CLS + cls_pos``, the prompts unchanged (zero positional
            embedding), then each patch token plus ``pos_embed(centre)``.
        """
        check_points(points, self.num_groups, self.group_size, "this PointTransformer")
        neighbourhoods, centres = group_points(points, self.num_groups, self.group_size)
        patches = self.encoder2trans(self.encoder(neighbourhoods)) + self.pos_embed(centres)  # [B, G, W]
        return token_sequence(self.cls_token + self.cls_pos, patches, prompts)

    # -- public -----------------------------------------------------------------------------
    def encode(self, points: Tensor, prompts: Tensor | None = None) -> Tensor:
        """Embed clouds into the shared space.

        Args:
            points: ``[B, N, 3]`` float32, ``N >= max(num_groups, group_size)``.
            prompts: ``[B, P, W]``, ``[P, W]`` or None (the plain encoder).

        Returns:
            ``[B, embed_dim]``, not normalised.
        """
        x = self.tokens(points, prompts)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        pooled = x[:, 0]
        if self.pool == "cls+max":
            num_patches = self.num_groups
            pooled = torch.cat([pooled, x[:, -num_patches:].amax(dim=1)], dim=-1)
        return self.trans2embed(pooled)

    def forward(self, points: Tensor, prompts: Tensor | None = None) -> Tensor:
        """Same as :meth:`encode`: ``[B, N, 3]`` -> ``[B, embed_dim]``."""
        return self.encode(points, prompts)

    def extra_repr(self) -> str:
        return (f"width={self.width}, depth={self.depth}, num_heads={self.num_heads}, "
                f"groups={self.num_groups}x{self.group_size}, embed_dim={self.embed_dim}, pool={self.pool!r}")


# --------------------------------------------------------------------------- registered variants

#: Paper scale embeds into EVA02-E-14-plus's 1024-d CLIP space; Uni3D's mini-PointNet ends at 512.
_PAPER = {"embed_dim": 1024, "encoder_dim": 512}
#: The keywords of a classifier builder that go to the head, not to the encoder.
HEAD_KWARGS = ("num_classes", "class_embeddings", "class_names", "head", "logit_scale")


def with_head(encoder: nn.Module, **head_kwargs: Any) -> EmbeddingClassifier:
    """``EmbeddingClassifier(encoder, head)`` from :data:`HEAD_KWARGS`.

    ``num_classes`` (C), ``class_embeddings`` (``[C, embed_dim]`` tensor -> text-embedding
    head), ``head`` (``"linear"`` / ``"text"``; default text iff class embeddings are given),
    ``class_names``, ``logit_scale`` (text head, default 100).
    """
    class_names = head_kwargs.pop("class_names", None)
    return EmbeddingClassifier(encoder, make_head(int(encoder.embed_dim), **head_kwargs), class_names=class_names)


def _create(sizes: dict[str, Any], **kwargs: Any) -> EmbeddingClassifier:
    """A classifier around ``PointTransformer(**sizes, **encoder overrides)``; :data:`HEAD_KWARGS` go
    to the head (:func:`with_head`), the rest to :class:`PointTransformer`, overriding ``sizes``."""
    head_args = {k: kwargs.pop(k) for k in HEAD_KWARGS if k in kwargs}
    return with_head(PointTransformer(**{**sizes, **kwargs}), **head_args)


@register_model("point-transformer-student", tags=("clip-space",))
def point_transformer_student(**kwargs: Any) -> EmbeddingClassifier:
    """Prompt-capable point transformer, small (4 x w128, 32 x 16 groups): MRPD's student on CPU."""
    sizes = {"width": 128, "depth": 4, "num_heads": 4, "num_groups": 32, "group_size": 16, "embed_dim": 256}
    return _create(sizes, **kwargs)


@register_model("point-transformer-teacher", tags=("clip-space",))
def point_transformer_teacher(**kwargs: Any) -> EmbeddingClassifier:
    """Point transformer, larger (4 x w256, 32 x 32 groups covering the cloud): MRPD's 3D teacher on CPU."""
    # Measured on SynthShapes (2,048 clouds, 12 epochs): 95.7% in 371 s, where 6 x w192 with
    # 64 x 16 groups reached 81.2% in 8 epochs (275 s): wider and shallower learns faster here.
    sizes = {"width": 256, "depth": 4, "num_heads": 8, "num_groups": 32, "group_size": 32, "embed_dim": 256}
    return _create(sizes, **kwargs)


@register_model("point-transformer-student-paper", tags=("clip-space",))
def point_transformer_student_paper(**kwargs: Any) -> EmbeddingClassifier:
    """Prompt-capable point transformer at paper scale (12 x w384, 512 x 32; Uni3D-S-like), GPU."""
    sizes = {"width": 384, "depth": 12, "num_heads": 6, "num_groups": 512, "group_size": 32, **_PAPER}
    return _create(sizes, **kwargs)


@register_model("point-transformer-teacher-paper", tags=("clip-space",))
def point_transformer_teacher_paper(**kwargs: Any) -> EmbeddingClassifier:
    """Point transformer at paper scale (12 x w768, 512 x 64; Uni3D-B-like 3D teacher), GPU."""
    sizes = {"width": 768, "depth": 12, "num_heads": 12, "num_groups": 512, "group_size": 64, **_PAPER}
    return _create(sizes, **kwargs)
