"""Uni3D point encoders (Ti, S, B, L, g) in Uni3D's exact layout: the official checkpoints load strictly.

Uni3D (Zhou et al., ICLR 2024; baaivision/Uni3D, ``models/point_encoder.py``) is Point-BERT's
grouping and mini-PointNet around the blocks of a timm EVA / EVA02 ViT:

    points [B, N, 3] -> FPS centres [B, G, 3] + kNN groups [B, G, K, 3] (relative to centre)
    -> ++ constant grey colour [B, G, K, 6] -> mini-PointNet (Conv1d, kernel 1) [B, G, 512]
    -> encoder2trans [B, G, W] + pos_embed(centre) -> [CLS + cls_pos, prompts, patches]
    -> visual.pos_drop -> visual.blocks[i](x), no RoPE -> visual.norm, visual.fc_norm on CLS
    -> trans2embed [B, 1024] (EVA02-E-14-plus's CLIP space; not normalised)

MRPD's point prompts (PROTOCOL.md section 4) enter right after CLS with a zero positional
embedding, as in MRPD's own ``point_encoder.py``; ``prompts=None`` is Uni3D's forward. The
interface is :class:`~models.point_transformer.PointTransformer`'s (``width``,
``embed_dim``, ``encode(points, prompts)``), so ``defenses/prompting.py`` and MRPD take a
Uni3D student or teacher unchanged.

Checkpoint layout (``model.pt`` holds the state dict under ``"module"``, keys maybe prefixed ``module.``),
the state dict of :class:`Uni3DEncoder` key for key:

- ``logit_scale`` ``[]``: Uni3D's training temperature (kept as a buffer, never used here);
- ``point_encoder.encoder.{first,second}_conv.{0,1,3}.*``: Conv1d ``6 -> 128``, BatchNorm,
  Conv1d ``128 -> 256``; Conv1d ``512 -> 512``, BatchNorm, Conv1d ``512 -> 512``;
- ``point_encoder.{encoder2trans, trans2embed, cls_token, cls_pos, pos_embed.{0,2}}.*``;
- ``point_encoder.visual.*``: the whole timm model Uni3D built with
  ``timm.create_model(pc_model)``, including the image parts it never calls
  (``patch_embed``, ``pos_embed``, ``cls_token``, ``fc_norm``, the classifier ``head`` where
  the model has one). RoPE tables are non-persistent buffers, never in the file.

Sizes (:data:`UNI3D_SIZES`): the timm model Uni3D / MRPD name per size; all use
``num_groups=512, group_size=64, encoder_dim=512, embed_dim=1024``.

Inputs must be prepared as Uni3D's were: unit-sphere normalised clouds (Uni3D evaluates on
10,000 points; any ``N >= 512`` runs), an uncoloured cloud gets the constant ``colour``
(Uni3D's evaluation: 0.4; MRPD's scripts: 0.5), and ``swap_yz`` swaps y and z first
(Uni3D's evaluation does so for its OpenShape-format files; MRPD's code does not).

Floor 1: imports torch, timm (lazily), ``benchmark.core`` and ``models``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.core.registry import UnknownNameError, close_matches_hint
from models import register_model
from models.checkpoints import check_state_dict, read_state_dict
from models.heads import EmbeddingClassifier
from models.point_transformer import HEAD_KWARGS, check_points, group_points, token_sequence, with_head

__all__ = [
    "UNI3D_SIZES",
    "Uni3DEncoder",
    "Uni3DPatchEncoder",
    "Uni3DPointEncoder",
    "Uni3DSize",
    "load_uni3d_weights",
    "uni3d_b",
    "uni3d_size",
    "uni3d_classifier",
    "uni3d_g",
    "uni3d_l",
    "uni3d_s",
    "uni3d_ti",
]


@dataclass(frozen=True)
class Uni3DSize:
    """One Uni3D size: its name, the timm model its checkpoint was built with, and that model's sizes."""

    name: str  # "Uni3D-B"
    timm_model: str  # the timm name (with the pretrained tag, which fixes the classifier head)
    width: int
    depth: int
    num_heads: int
    blocks: str  # the block type, for messages

    @property
    def model_name(self) -> str:
        """The registry name, ``uni3d-<size>``."""
        return "uni3d-" + self.name.split("-")[1].lower()


_EVA02_SMALL = "EVA02: fused qkv + q_bias/v_bias, packed SwiGLU mlp.fc1 [2h, W] / fc2, no classifier head"
_EVA02_LARGE = "EVA02: attn.{q,k,v}_proj, SwiGLU mlp.fc1_g/fc1_x + inner mlp.norm / fc2, head 1000"

#: Uni3D's sizes. Ti/S as MRPD's code builds the student (``eva02_tiny_patch14_224``: default tag
#: ``mim_in22k``, no head); B/L/g as Uni3D's ``scripts/inference.sh`` (fine-tuned tags, 1000-class head).
UNI3D_SIZES: dict[str, Uni3DSize] = {
    "ti": Uni3DSize("Uni3D-Ti", "eva02_tiny_patch14_224.mim_in22k", 192, 12, 3, _EVA02_SMALL),
    "s": Uni3DSize("Uni3D-S", "eva02_small_patch14_224.mim_in22k", 384, 12, 6, _EVA02_SMALL),
    "b": Uni3DSize("Uni3D-B", "eva02_base_patch14_448.mim_in22k_ft_in22k_in1k", 768, 12, 12, _EVA02_LARGE),
    "l": Uni3DSize("Uni3D-L", "eva02_large_patch14_448.mim_m38m_ft_in22k_in1k", 1024, 24, 16, _EVA02_LARGE),
    "g": Uni3DSize("Uni3D-g", "eva_giant_patch14_560.m30m_ft_in22k_in1k", 1408, 40, 16,
                   "EVA-01: fused qkv + q_bias/v_bias, GELU mlp.fc1/fc2 (6144), head 1000"),
}

_CONVERT_HINT = (
    "If the file holds non-tensor objects (a DeepSpeed checkpoint), PCRB will not unpickle it: convert it "
    "once yourself, where you trust the file, to safetensors (unpickle it, take its 'module' dict and write "
    "it with safetensors.torch.save_file, tensors made contiguous) and pass model.safetensors"
)


# --------------------------------------------------------------------------- Uni3D's modules


class Uni3DPatchEncoder(nn.Module):
    """Uni3D's mini-PointNet ("Encoder"): Conv1d layers with kernel 1, keys as in the checkpoint.

    ``first_conv``: ``6 -> 128`` (BN, ReLU) ``-> 256``; max over the group, concatenated in
    front of every point's feature (``512``); ``second_conv``: ``512 -> 512`` (BN, ReLU)
    ``-> out_dim``; max over the group. Eval mode uses BatchNorm's running statistics.
    """

    def __init__(self, out_dim: int = 512) -> None:
        super().__init__()
        self.out_dim = int(out_dim)
        self.first_conv = nn.Sequential(nn.Conv1d(6, 128, 1), nn.BatchNorm1d(128), nn.ReLU(), nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(), nn.Conv1d(512, self.out_dim, 1)
        )

    def forward(self, features: Tensor) -> Tensor:
        """``features`` ``[B, G, K, 6]`` (relative xyz, rgb) -> ``[B, G, out_dim]``."""
        b, g, k, c = features.shape
        x = self.first_conv(features.reshape(b * g, k, c).transpose(1, 2))  # [BG, 256, K]
        x = torch.cat([x.amax(dim=2, keepdim=True).expand(-1, -1, k), x], dim=1)  # [BG, 512, K]
        return self.second_conv(x).amax(dim=2).reshape(b, g, self.out_dim)


class Uni3DPointEncoder(nn.Module):
    """The weights of Uni3D's ``PointcloudEncoder`` (``point_encoder.*``); :class:`Uni3DEncoder` runs them.

    Args:
        visual: the timm EVA / EVA02 model whose ``blocks`` (and ``norm``, ``fc_norm``) run.
        width: ``W``, the ViT's width.
        encoder_dim: ``E``, the mini-PointNet's output size (512).
        embed_dim: ``D``, the CLIP space (1024).
    """

    def __init__(self, visual: nn.Module, width: int, encoder_dim: int = 512, embed_dim: int = 1024) -> None:
        super().__init__()
        self.encoder = Uni3DPatchEncoder(encoder_dim)
        self.encoder2trans = nn.Linear(encoder_dim, width)
        self.trans2embed = nn.Linear(width, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        self.visual = visual
        for module in (self.encoder2trans, self.trans2embed, self.pos_embed[0], self.pos_embed[2]):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)


class Uni3DEncoder(nn.Module):
    """A Uni3D point encoder with optional shallow prompt tokens: ``[B, N, 3] -> [B, embed_dim]``.

    Built with random weights (timm's initialisation); :func:`load_uni3d_weights` loads an
    official checkpoint strictly. Keep it in ``eval()`` when frozen: in train mode
    BatchNorm would use and update batch statistics (and timm's drop path would drop).

    Args:
        size: ``"ti"``, ``"s"``, ``"b"``, ``"l"`` or ``"g"`` (:data:`UNI3D_SIZES`).
        num_groups: ``G`` FPS centres (512; fewer only for quick tests: no weight depends on it).
        group_size: ``K`` neighbours per centre (64; no weight depends on it either).
        encoder_dim: the mini-PointNet's output size (512).
        embed_dim: ``D``, the CLIP space (1024, EVA02-E-14-plus).
        colour: the constant rgb of every point (Uni3D: 0.4, MRPD's scripts: 0.5).
        swap_yz: swap y and z before encoding (Uni3D's evaluation of OpenShape-format files).
        drop_path_rate: timm's stochastic depth (training only).
        timm_model: another timm model name than the size's (e.g. another pretrained tag,
            which changes the classifier head the checkpoint carries).

    Shapes: ``encode(points [B, N, 3], prompts [B, P, W] | [P, W] | None) -> [B, D]``,
    ``N >= max(G, K)``; gradients reach ``points`` and ``prompts``.
    """

    def __init__(
        self,
        size: str = "b",
        *,
        num_groups: int = 512,
        group_size: int = 64,
        encoder_dim: int = 512,
        embed_dim: int = 1024,
        colour: float = 0.4,
        swap_yz: bool = False,
        drop_path_rate: float = 0.0,
        timm_model: str | None = None,
    ) -> None:
        super().__init__()
        from timm import create_model  # ~1 s to import: only when a Uni3D model is built

        self.spec = uni3d_size(size)
        self.size = size
        self.timm_model = timm_model or self.spec.timm_model
        for name, value in (("num_groups", num_groups), ("group_size", group_size),
                            ("encoder_dim", encoder_dim), ("embed_dim", embed_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        visual = create_model(self.timm_model, pretrained=False, drop_path_rate=float(drop_path_rate))
        self.width = int(visual.embed_dim)
        self.depth = len(visual.blocks)
        self.num_heads = int(visual.blocks[0].attn.num_heads)
        self.num_groups = num_groups
        self.group_size = group_size
        self.embed_dim = embed_dim
        self.colour = float(colour)
        self.swap_yz = bool(swap_yz)
        self.point_encoder = Uni3DPointEncoder(visual, self.width, encoder_dim, embed_dim)
        # Uni3D's nn.Parameter; a buffer here: loaded and saved, never trained, never used
        self.register_buffer("logit_scale", torch.full((), math.log(1 / 0.07)))

    @property
    def name(self) -> str:
        return self.spec.name

    def describe(self) -> str:
        """The expected checkpoint layout in one line (for messages)."""
        pe = self.point_encoder
        e, w, d = pe.encoder.out_dim, self.width, self.embed_dim
        return (f"{self.name}: logit_scale + point_encoder.{{encoder (Conv1d mini-PointNet 6->128->256, "
                f"512->512->{e}), encoder2trans {e}->{w}, cls_token, cls_pos, pos_embed 3->128->{w}, "
                f"visual = timm '{self.timm_model}' ({self.depth} blocks x {w}, {self.num_heads} heads; "
                f"{self.spec.blocks}), trans2embed {w}->{d}}}")

    # -- the forward ----------------------------------------------------------------------------
    def tokens(self, points: Tensor, prompts: Tensor | None = None) -> Tensor:
        """The sequence entering the first block: ``[B, 1 + P + G, W]`` (CLS, prompts, patches).

        Args:
            points: ``[B, N, 3]`` float32.
            prompts: ``[B, P, W]``, ``[P, W]`` (shared by the batch) or None.
        """
        check_points(points, self.num_groups, self.group_size, self.name)
        if self.swap_yz:
            points = points[..., [0, 2, 1]]
        neighbourhoods, centres = group_points(points, self.num_groups, self.group_size)
        features = torch.cat([neighbourhoods, torch.full_like(neighbourhoods, self.colour)], dim=-1)
        pe = self.point_encoder
        patches = pe.encoder2trans(pe.encoder(features)) + pe.pos_embed(centres)  # [B, G, W]
        return token_sequence(pe.cls_token + pe.cls_pos, patches, prompts)

    def encode(self, points: Tensor, prompts: Tensor | None = None) -> Tensor:
        """Embed clouds ``[B, N, 3]`` (+ prompts) into the CLIP space: ``[B, embed_dim]``, not normalised."""
        visual = self.point_encoder.visual
        x = visual.pos_drop(self.tokens(points, prompts))
        for block in visual.blocks:
            x = block(x)
        return self.point_encoder.trans2embed(visual.fc_norm(visual.norm(x[:, 0])))

    def forward(self, points: Tensor, prompts: Tensor | None = None) -> Tensor:
        """Same as :meth:`encode`."""
        return self.encode(points, prompts)

    def extra_repr(self) -> str:
        return (f"{self.name}, timm_model={self.timm_model!r}, width={self.width}, depth={self.depth}, "
                f"groups={self.num_groups}x{self.group_size}, embed_dim={self.embed_dim}, colour={self.colour}")


def uni3d_size(size: str) -> Uni3DSize:
    """The :class:`Uni3DSize` called ``size`` (``"ti"``, ``"s"``, ``"b"``, ``"l"``, ``"g"``)."""
    if size not in UNI3D_SIZES:
        hint = close_matches_hint(str(size), UNI3D_SIZES) or "."
        raise UnknownNameError(f"unknown Uni3D size {size!r}{hint} Sizes: {', '.join(UNI3D_SIZES)}")
    return UNI3D_SIZES[size]


# --------------------------------------------------------------------------- loading


def load_uni3d_weights(encoder: Uni3DEncoder, path: str | Path) -> Uni3DEncoder:
    """Load Uni3D's checkpoint at ``path`` into ``encoder`` strictly; returns ``encoder``.

    ``path``: Uni3D's ``model.pt`` (the state dict under ``"module"``, read with
    ``weights_only=True``), or a ``.safetensors`` / ``.pt`` of the same state dict. Every
    key of the file must be one of the encoder's, with the same shape, and every key of
    the encoder must be in the file; values are cast to the encoder's dtypes.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable, or another layout (the message lists the keys that differ,
            the expected layout and, where it can tell, the model the file fits).
    """
    what = f"{encoder.name} weights"
    state = read_state_dict(path, what=what, containers=("module", "state_dict", "model"),
                            strip_prefixes=("module.",), unreadable_hint=_CONVERT_HINT)
    check_state_dict(encoder, state, what=what, source=path, describe=encoder.describe(),
                     advice=lambda file_state: _advice(encoder, file_state))
    own = encoder.state_dict()
    encoder.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return encoder


def _advice(encoder: Uni3DEncoder, state: Mapping[str, Tensor]) -> str:
    """What to build instead, judged from the file's shapes."""
    if not any(k.startswith("point_encoder.") for k in state):
        return (f"The file has no point_encoder.* keys (it starts {', '.join(list(state)[:3])}): it is not a "
                "Uni3D checkpoint. Pass Uni3D's released model.pt.")
    hints = []
    cls = state.get("point_encoder.cls_token")
    if cls is not None and cls.shape[-1] != encoder.width:
        fits = [s.model_name for s in UNI3D_SIZES.values() if s.width == cls.shape[-1]]
        hints.append(f"the file's point encoder is {cls.shape[-1]} wide, {encoder.name} is {encoder.width}"
                     + (f": use model '{fits[0]}'" if fits else ""))
    proj = state.get("point_encoder.trans2embed.weight")
    if proj is not None and proj.dim() == 2 and proj.shape[0] != encoder.embed_dim:
        hints.append(f"the file embeds into {proj.shape[0]} dimensions, this model into {encoder.embed_dim}: build "
                     f"it with embed_dim={proj.shape[0]} (in a run the zoo takes embed_dim from the CLIP teacher; "
                     "Uni3D's is EVA02-E-14-plus: --set models.clip.model_name=EVA02-E-14-plus "
                     "models.clip.checkpoint=/path/to/open_clip_pytorch_model.bin)")
    key = "point_encoder.visual.head.weight"
    head, own_head = state.get(key), encoder.state_dict().get(key)
    if (head is None) != (own_head is None) or (head is not None and own_head is not None
                                                 and head.shape != own_head.shape):
        classes = "no classifier head" if head is None else f"a {head.shape[0]}-class head"
        hints.append(f"the file's timm ViT has {classes}: pass timm_model='<timm name>.<pretrained tag>' "
                     "with that head")
    if not hints:
        hints.append(f"{encoder.name} expects the model.pt Uni3D's create_uni3d saves with "
                     f"--pc-model {encoder.timm_model.split('.')[0]}")
    return "Hint: " + "; ".join(hints) + "."


# --------------------------------------------------------------------------- registered variants

_ENCODER_KWARGS = ("num_groups", "group_size", "encoder_dim", "embed_dim", "colour", "swap_yz",
                   "drop_path_rate", "timm_model")


def uni3d_classifier(size: str, pretrained: str | Path | None = None, **kwargs: Any) -> EmbeddingClassifier:
    """A Uni3D encoder of ``size`` plus a head, its weights from ``pretrained`` (a local file) when given.

    Keywords: :class:`Uni3DEncoder`'s (``num_groups``, ``group_size``, ``encoder_dim``,
    ``embed_dim``, ``colour``, ``swap_yz``, ``drop_path_rate``, ``timm_model``) and the head's
    (:data:`~models.point_transformer.HEAD_KWARGS`). ``pretrained=None`` leaves timm's
    random initialisation (a model to train). PCRB never downloads.

    Raises:
        FileNotFoundError: ``pretrained`` names no file (the message gives the ``--set`` key).
        UnknownNameError: a keyword neither the encoder nor the head takes.
    """
    spec = uni3d_size(size)
    for key in kwargs:
        if key not in _ENCODER_KWARGS and key not in HEAD_KWARGS:
            hint = close_matches_hint(key, (*_ENCODER_KWARGS, *HEAD_KWARGS)) or "."
            raise UnknownNameError(f"model '{spec.model_name}' has no parameter '{key}'{hint} Known: pretrained, "
                                   f"{', '.join(_ENCODER_KWARGS + HEAD_KWARGS)}")
    path = None if pretrained is None else Path(pretrained).expanduser()
    if path is not None and not path.is_file():
        raise FileNotFoundError(
            f"{spec.name} weights not found: {path}. Give the path of Uni3D's released model.pt (Hugging Face "
            f"BAAI/Uni3D, modelzoo/) with --set models.{spec.model_name}.pretrained=/path/to/model.pt; "
            "PCRB never downloads"
        )
    head_args = {k: kwargs.pop(k) for k in HEAD_KWARGS if k in kwargs}
    encoder = Uni3DEncoder(size, **kwargs)
    if path is not None:
        load_uni3d_weights(encoder, path)
    return with_head(encoder, **head_args)


@register_model("uni3d-ti", tags=("clip-space",))
def uni3d_ti(pretrained: str | None = None, **kwargs: Any) -> EmbeddingClassifier:
    """Uni3D-Ti (EVA02-Ti blocks, 12 x w192; MRPD's student): pretrained=<Uni3D's model.pt>, loaded strictly."""
    return uni3d_classifier("ti", pretrained, **kwargs)


@register_model("uni3d-s", tags=("clip-space",))
def uni3d_s(pretrained: str | None = None, **kwargs: Any) -> EmbeddingClassifier:
    """Uni3D-S (EVA02-S blocks, 12 x w384): pretrained=<Uni3D's model.pt>, loaded strictly."""
    return uni3d_classifier("s", pretrained, **kwargs)


@register_model("uni3d-b", tags=("clip-space",))
def uni3d_b(pretrained: str | None = None, **kwargs: Any) -> EmbeddingClassifier:
    """Uni3D-B (EVA02-B blocks, 12 x w768; MRPD's point teacher): pretrained=<Uni3D's model.pt>, loaded strictly."""
    return uni3d_classifier("b", pretrained, **kwargs)


@register_model("uni3d-l", tags=("clip-space",))
def uni3d_l(pretrained: str | None = None, **kwargs: Any) -> EmbeddingClassifier:
    """Uni3D-L (EVA02-L blocks, 24 x w1024): pretrained=<Uni3D's model.pt>, loaded strictly."""
    return uni3d_classifier("l", pretrained, **kwargs)


@register_model("uni3d-g", tags=("clip-space",))
def uni3d_g(pretrained: str | None = None, **kwargs: Any) -> EmbeddingClassifier:
    """Uni3D-g (EVA-01 giant blocks, 40 x w1408): pretrained=<Uni3D's model.pt>, loaded strictly."""
    return uni3d_classifier("g", pretrained, **kwargs)
