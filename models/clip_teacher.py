"""The open_clip CLIP model behind the interface MRPD needs (``ClipTeacher``): depth images
and token ids in, embeddings out, plus the facts (image size, widths) the students need.

How a teacher is built (tiny config or a named architecture with local weights) is in
:mod:`models.clip` and :mod:`models.clip_loading`; its CoOp prompts in :mod:`models.clip_prompts`.
Floor 1: imports torch only (open_clip objects come in as arguments).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "ClipTeacher"]

#: open_clip's default ("OpenAI") image normalisation, used when nothing better is known.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipTeacher(nn.Module):
    """An open_clip CLIP model behind the interface MRPD needs.

    ``encode_image``: images ``[B, 3, H, W]`` float in [0, 1] (depth maps) -> ``[B, D]``;
    the model's own mean/std normalisation is applied here. ``encode_text``: token ids
    ``[C, L]`` -> ``[C, D]``. Both return raw (NOT L2-normalised) embeddings unless
    ``normalize=True``, as open_clip's own methods do. ``forward`` is ``encode_image``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[..., Tensor],
        *,
        image_mean: Sequence[float] = OPENAI_MEAN,
        image_std: Sequence[float] = OPENAI_STD,
        name: str = "custom",
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        #: architecture description (open_clip model config dict), for config hashes.
        self.config = dict(config or {})
        mean = torch.tensor(tuple(image_mean), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(tuple(image_std), dtype=torch.float32).view(1, -1, 1, 1)
        if mean.shape[1] != 3 or std.shape[1] != 3:
            raise ValueError(f"image_mean and image_std need 3 values (RGB), got {image_mean} and {image_std}")
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)

    # -- facts ------------------------------------------------------------------------------
    @property
    def image_hw(self) -> tuple[int, int]:
        """Input image (height, width) in pixels."""
        h, w = _pair(self.model.visual.image_size)
        return int(h), int(w)

    @property
    def image_size(self) -> int | tuple[int, int]:
        """Input image side in pixels (an int for square inputs, as open_clip configs write it)."""
        h, w = self.image_hw
        return h if h == w else (h, w)

    @property
    def context_length(self) -> int:
        """Token sequence length L the text tower takes."""
        return int(self.model.context_length)

    @property
    def text_width(self) -> int:
        """Width of the text transformer (size of one token embedding / context vector)."""
        return int(_text_parts(self.model)["token_embedding"].embedding_dim)

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint image-text embedding space."""
        proj = _text_parts(self.model)["text_projection"]
        if proj is None:
            return self.text_width
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])

    @property
    def logit_scale(self) -> Tensor:
        """The model's learned temperature, exponentiated (a scalar tensor; ~14.3 = 1/0.07 at init)."""
        return self.model.logit_scale.exp()

    @property
    def device(self) -> torch.device:
        return self.image_mean.device

    # -- encoders ---------------------------------------------------------------------------
    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        """Token ids ``[C, context_length]`` (int64, on the model's device) of ``texts``."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts)).to(self.device)

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """Images ``[B, 3, H, W]`` float in [0, 1] -> embeddings ``[B, D]`` (raw unless ``normalize``)."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != self.image_hw:
            h, w = self.image_hw
            raise ValueError(
                f"CLIP teacher '{self.name}' takes images [B, 3, {h}, {w}] in [0, 1]; got "
                f"{list(images.shape)} (project/resize depth maps to the teacher's image_size)"
            )
        x = (images.to(self.image_mean.dtype) - self.image_mean) / self.image_std
        dtype = next(self.model.visual.parameters()).dtype
        return self.model.encode_image(x.to(dtype), normalize=normalize)

    def encode_text(self, tokens: Tensor, normalize: bool = False) -> Tensor:
        """Token ids ``[C, L]`` (from ``tokenize``) -> embeddings ``[C, D]`` (raw unless ``normalize``)."""
        return self.model.encode_text(tokens.to(self.device), normalize=normalize)

    def forward(self, images: Tensor) -> Tensor:
        return self.encode_image(images)

    def freeze(self) -> ClipTeacher:
        """Make this a frozen teacher: eval mode, no parameter requires grad. Returns ``self``."""
        self.requires_grad_(False)
        return self.eval()

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, image_size={self.image_size}, embed_dim={self.embed_dim}, "
            f"text_width={self.text_width}, context_length={self.context_length}"
        )


# -- helpers ----------------------------------------------------------------------------------
def _pair(size: Any) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _text_parts(model: nn.Module, prompting: bool = False) -> dict[str, Any]:
    """The text tower's pieces, whether open_clip keeps them on the CLIP or on ``model.text``."""
    tower = getattr(model, "text", None)
    if tower is None:  # open_clip.CLIP: text modules live on the model itself
        tower, pool_type, eos_id = model, model.text_pool_type, getattr(model, "text_eos_id", None)
    else:  # CustomTextCLIP: a TextTransformer (or an HF encoder) under .text
        if not hasattr(tower, "token_embedding"):
            raise NotImplementedError(
                f"text tower {type(tower).__name__} is not open_clip's TextTransformer; "
                "PCRB supports CLIP text towers built by open_clip itself"
            )
        if prompting and (tower.cls_emb is not None or getattr(tower, "use_pad_mask", False)):
            raise NotImplementedError("prompted text encoding does not support CoCa-style cls/pad-masked text towers")
        pool_type, eos_id = tower.pool_type, getattr(tower, "eos_id", None)
    return {
        "token_embedding": tower.token_embedding,
        "positional_embedding": tower.positional_embedding,
        "transformer": tower.transformer,
        "attn_mask": tower.attn_mask,
        "ln_final": tower.ln_final,
        "text_projection": tower.text_projection,
        "pool_type": pool_type,
        "eos_id": eos_id,
    }

