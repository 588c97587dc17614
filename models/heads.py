"""Classification heads on embeddings, and the classifier that joins an encoder to a head.

- :class:`LinearHead`: a plain linear layer, ``[B, D] -> [B, C]`` logits.
- :class:`TextEmbeddingHead`: CLIP zero-shot style, ``logit_scale * cos(z, t_c)`` against one
  fixed embedding per class (MRPD and Uni3D classify this way).
- :class:`EmbeddingClassifier`: ``encoder.encode(points, prompts) -> head``; an ``nn.Module``
  ``[B, N, 3] -> [B, C]`` logits with ``class_names``, which is what a victim, a student or a
  defended model is to an attack.

Floor 1: imports torch only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EmbeddingClassifier", "LinearHead", "PromptableEncoder", "TextEmbeddingHead", "make_head"]


class PromptableEncoder(Protocol):
    """What :class:`EmbeddingClassifier` needs from its encoder."""

    embed_dim: int

    def encode(self, points: Tensor, prompts: Tensor | None = None) -> Tensor: ...


class LinearHead(nn.Module):
    """Linear classifier on an embedding: ``z [B, in_dim] -> logits [B, num_classes]``."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        self.in_dim = int(in_dim)
        self.num_classes = int(num_classes)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, z: Tensor) -> Tensor:
        """``z`` ``[B, in_dim]`` -> logits ``[B, num_classes]``."""
        return self.fc(z)


class TextEmbeddingHead(nn.Module):
    """Scaled cosine similarity to fixed class embeddings (CLIP zero-shot style).

    ``logits[b, c] = logit_scale * cos(z[b], t[c])``. Both the class embeddings and the scale
    are buffers, not parameters: they are saved in the state dict but never trained, and an
    attack's loss sees exactly ``logit_scale * cosine`` with this head's own scale.

    Args:
        class_embeddings: ``[C, D]`` float, one embedding per class (e.g. CLIP text embeddings
            of "a depth picture of a {class}."); L2-normalised when set.
        logit_scale: the fixed multiplier on the cosines (CLIP's learned value is ~100).

    Attributes:
        class_embeddings: ``[C, D]`` buffer, unit rows (an all-zero row stays zero: a
            placeholder class that scores 0).
        logit_scale: 0-dim float buffer.
    """

    class_embeddings: Tensor
    logit_scale: Tensor

    def __init__(self, class_embeddings: Tensor, logit_scale: float = 100.0) -> None:
        super().__init__()
        _check_class_embeddings(class_embeddings)
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.detach().float(), dim=-1).clone())
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    @property
    def embed_dim(self) -> int:
        return int(self.class_embeddings.shape[1])

    @torch.no_grad()
    def set_class_embeddings(self, class_embeddings: Tensor) -> None:
        """Replace the class embeddings with ``class_embeddings`` ``[C', D]`` (normalised here).

        The number of classes may change; the embedding size ``D`` may not (it is the
        encoder's). The buffer keeps its device.
        """
        _check_class_embeddings(class_embeddings)
        if class_embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"class_embeddings must be [C, {self.embed_dim}] (this head's embedding size); "
                f"got {list(class_embeddings.shape)}"
            )
        device = self.class_embeddings.device
        self.class_embeddings = F.normalize(class_embeddings.detach().float(), dim=-1).to(device).clone()

    def forward(self, z: Tensor) -> Tensor:
        """``z`` ``[B, D]`` (any norm) -> logits ``[B, C]`` = ``logit_scale * cos(z, t_c)``."""
        if z.dim() != 2 or z.shape[1] != self.embed_dim:
            raise ValueError(f"z must be [B, {self.embed_dim}]; got {list(z.shape)}")
        t = self.class_embeddings.to(z.dtype)
        return self.logit_scale.to(z.dtype) * (F.normalize(z, dim=-1) @ t.T)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embed_dim={self.embed_dim}, logit_scale={float(self.logit_scale):g}"


def _check_class_embeddings(t: Tensor) -> None:
    if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[0] < 1 or not t.is_floating_point():
        shape = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"class_embeddings must be a float tensor [C, D] with C >= 1; got {shape}")


def make_head(
    embed_dim: int,
    num_classes: int | None = None,
    class_embeddings: Tensor | None = None,
    head: str | None = None,
    logit_scale: float = 100.0,
) -> LinearHead | TextEmbeddingHead:
    """The head a builder asked for.

    Args:
        embed_dim: the encoder's embedding size ``D``.
        num_classes: ``C``; optional when ``class_embeddings`` gives it.
        class_embeddings: ``[C, D]``; given -> a :class:`TextEmbeddingHead` on them.
        head: ``"linear"`` or ``"text"``; default ``"text"`` when ``class_embeddings`` is
            given, else ``"linear"``. ``"text"`` with only ``num_classes`` gives all-zero
            placeholder embeddings, to be set with ``set_class_embeddings`` or restored by
            ``load_state_dict`` (they are buffers in the state dict).
        logit_scale: the text head's fixed scale.
    """
    if class_embeddings is not None:
        _check_class_embeddings(class_embeddings)
        if num_classes is not None and num_classes != class_embeddings.shape[0]:
            raise ValueError(
                f"num_classes={num_classes} disagrees with class_embeddings {list(class_embeddings.shape)}; "
                "pass one of them"
            )
        if class_embeddings.shape[1] != embed_dim:
            raise ValueError(
                f"class_embeddings must be [C, embed_dim={embed_dim}]; got {list(class_embeddings.shape)}. "
                "Build the model with embed_dim equal to the text encoder's embedding size"
            )
        num_classes = int(class_embeddings.shape[0])
    if num_classes is None:
        raise ValueError(
            "pass num_classes=C (linear head) or class_embeddings=[C, D] tensor (text-embedding head)"
        )
    kind = head or ("text" if class_embeddings is not None else "linear")
    if kind == "linear":
        if class_embeddings is not None:
            raise ValueError("head='linear' takes no class_embeddings; drop them or use head='text'")
        return LinearHead(embed_dim, num_classes)
    if kind == "text":
        if class_embeddings is None:
            class_embeddings = torch.zeros(num_classes, embed_dim)
        return TextEmbeddingHead(class_embeddings, logit_scale=logit_scale)
    raise ValueError(f"unknown head {head!r}; expected 'linear' or 'text'")


class EmbeddingClassifier(nn.Module):
    """An encoder into an embedding space plus a classification head: ``[B, N, 3] -> [B, C]``.

    Args:
        encoder: a module with ``encode(points [B, N, 3], prompts=None) -> [B, D]`` and
            ``embed_dim`` (e.g. :class:`models.point_transformer.PointTransformer`).
        head: ``[B, D] -> [B, C]`` with a ``num_classes`` attribute
            (:class:`LinearHead` or :class:`TextEmbeddingHead`).
        class_names: ``C`` names; default ``("class_0", ..., "class_{C-1}")``.

    Prompts (``[B, P, W]`` or ``[P, W]``, ``W = encoder.width``) pass through to the encoder,
    so ``model(points, prompts)`` is the prompted student MRPD trains and defends with.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.class_names = self._names(class_names, int(head.num_classes))

    @staticmethod
    def _names(class_names: Sequence[str] | None, num_classes: int) -> tuple[str, ...]:
        if class_names is None:
            return tuple(f"class_{i}" for i in range(num_classes))
        names = tuple(str(c) for c in class_names)
        if len(names) != num_classes:
            raise ValueError(f"got {len(names)} class_names for a head with {num_classes} classes")
        return names

    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes)

    @property
    def embed_dim(self) -> int:
        return int(self.encoder.embed_dim)

    def embed(self, points: Tensor, prompts: Tensor | None = None) -> Tensor:
        """The raw (unnormalised) embedding ``[B, D]`` of ``points`` ``[B, N, 3]``."""
        return self.encoder.encode(points, prompts)

    def forward(self, points: Tensor, prompts: Tensor | None = None) -> Tensor:
        """``points`` ``[B, N, 3]`` float32 (+ optional prompts) -> logits ``[B, C]``."""
        return self.head(self.encoder.encode(points, prompts))

    def set_class_embeddings(self, class_embeddings: Tensor, class_names: Sequence[str] | None = None) -> None:
        """Point a text-embedding head at new classes (``[C', D]``), renaming them if given."""
        if not isinstance(self.head, TextEmbeddingHead):
            raise TypeError(
                f"set_class_embeddings needs a TextEmbeddingHead; this classifier has {type(self.head).__name__} "
                "(build it with class_embeddings=... or head='text')"
            )
        _check_class_embeddings(class_embeddings)
        count = int(class_embeddings.shape[0])
        if class_names is not None:
            names = self._names(class_names, count)
        elif len(self.class_names) == count:
            names = self.class_names
        else:
            names = self._names(None, count)
        self.head.set_class_embeddings(class_embeddings)
        self.class_names = names
