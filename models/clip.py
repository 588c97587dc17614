"""CLIP teachers (open_clip): image tower for depth projections, text tower with CoOp prompts.

Two ways to get a teacher, both offline (PCRB never downloads, see ``build_clip``):

- ``build_clip("ViT-B-32", "/path/open_clip_model.safetensors")``: a named open_clip
  architecture (``open_clip.list_models()``) plus a LOCAL checkpoint file;
- ``build_tiny_clip()``: the embedded default, a small custom open_clip config (tiny ViT on
  64 x 64 depth maps, small text transformer, open_clip's BPE tokenizer) with random
  weights, trained in-suite.

``clip(model_name="tiny" | <open_clip name>, checkpoint=None | path)`` is the registered
builder (``bench list models``). A checkpoint is an open_clip state dict
(``teacher.model.state_dict()``) in ``.safetensors``, or ``.bin`` / ``.pt`` read with
``torch.load(weights_only=True)``.

``import open_clip`` costs seconds (it pulls in torchvision), so it happens inside the
builders, never at import time of this module.

One concept per module, all re-exported here (import from ``models.clip``):
:mod:`models.clip_teacher` (the ``ClipTeacher`` wrapper), :mod:`models.clip_loading`
(named architectures and local checkpoints), :mod:`models.clip_prompts` (CoOp prompts, the
zero-shot head); this file holds the embedded tiny config and the registered builder.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmark.core.registry import UnknownNameError, close_matches_hint
from models import register_model
from models.clip_loading import (  # noqa: F401  (private names re-exported for old callers)
    _CKPT_HINT,
    MissingClipWeightsError,
    _check_arch,
    _check_checkpoint_path,
    _load_state,
    _normalisation,
    _quiet_random_init_warning,
    build_clip,
    load_clip_checkpoint,
)
from models.clip_prompts import (  # noqa: F401
    DEFAULT_PROMPT_TEMPLATE,
    ZERO_SHOT_TEMPLATES,
    PromptedTextEncoder,
    _check_prompt_lengths,
    _frozen_call,
    encode_text_classes,
)
from models.clip_teacher import OPENAI_MEAN, OPENAI_STD, ClipTeacher, _pair, _text_parts  # noqa: F401

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "ZERO_SHOT_TEMPLATES",
    "ClipTeacher",
    "MissingClipWeightsError",
    "PromptedTextEncoder",
    "build_clip",
    "build_tiny_clip",
    "clip",
    "encode_text_classes",
    "load_clip_checkpoint",
    "tiny_clip_config",
]


# -- builders ---------------------------------------------------------------------------------
def tiny_clip_config(
    image_size: int = 64,
    embed_dim: int = 256,
    vision_width: int = 32,
    vision_layers: int | Sequence[int] = (1, 1, 1, 1),
    patch_size: int = 8,
    text_width: int = 128,
    text_layers: int = 4,
    text_heads: int = 4,
    context_length: int = 32,
) -> dict[str, Any]:
    """The embedded CLIP's architecture as an open_clip model config dict.

    ``vision_layers`` a tuple of blocks per stage gives open_clip's ModifiedResNet image tower
    (stage widths ``vision_width * (1, 2, 4, 8)``, attention pooling): the default, because
    on ~2,000 depth maps a CNN learns what a ViT cannot in the same budget (measured here,
    8 epochs: ResNet (1,1,1,1) x 32 reached 90.6% zero-shot accuracy on SynthShapes, a
    ViT 4 x 192 with 8-pixel patches 19.5%). An int gives a ViT of that depth
    (``patch_size``; heads = width // 64).
    """
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": list(vision_layers) if isinstance(vision_layers, (tuple, list)) else vision_layers,
            "width": vision_width,
            "patch_size": patch_size,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,  # open_clip's BPE tokenizer
            "width": text_width,
            "heads": text_heads,
            "layers": text_layers,
        },
    }


def build_tiny_clip(
    image_size: int = 64,
    embed_dim: int = 256,
    vision_width: int = 32,
    vision_layers: int | Sequence[int] = (1, 1, 1, 1),
    patch_size: int = 8,
    text_width: int = 128,
    text_layers: int = 4,
    text_heads: int = 4,
    context_length: int = 32,
    seed: int = 0,
) -> ClipTeacher:
    """The embedded default teacher: a small open_clip CLIP with seeded random weights (no download).

    Defaults: ~12.6 M parameters (6.3 M of them token embeddings), 64 x 64 images, context length 32, open_clip's BPE tokenizer
    (vocabulary 49,408, shipped in the wheel). Returned in eval mode; the global RNG is untouched.
    """
    import open_clip

    cfg = tiny_clip_config(
        image_size, embed_dim, vision_width, vision_layers, patch_size,
        text_width, text_layers, text_heads, context_length,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**cfg)
    tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    return ClipTeacher(model.eval(), tokenizer, name="tiny", config=cfg)


@register_model("clip", tags=("clip-teacher",))
def clip(model_name: str = "tiny", checkpoint: str | None = None, **kwargs: Any) -> ClipTeacher:
    """CLIP teacher (open_clip): 'tiny' embedded config, or a named architecture plus a local checkpoint.

    ``model_name="tiny"``: ``build_tiny_clip(**kwargs)`` (sizes, seed), then ``checkpoint``
    loaded if given. Any other name: ``build_clip(model_name, checkpoint, **kwargs)``
    (``image_mean``, ``image_std``, ``device``); the checkpoint is required.
    """
    if model_name == "tiny":
        _check_kwargs(build_tiny_clip, kwargs, "model_name='tiny'")
        teacher = build_tiny_clip(**kwargs)
        return load_clip_checkpoint(teacher, checkpoint) if checkpoint is not None else teacher
    _check_kwargs(build_clip, kwargs, f"model_name='{model_name}'")
    return build_clip(model_name, checkpoint, **kwargs)


def _check_kwargs(builder: Callable[..., Any], kwargs: dict[str, Any], where: str) -> None:
    params = [
        p.name for p in inspect.signature(builder).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("model_name", "checkpoint")
    ]
    for key in kwargs:
        if key not in params:
            hint = close_matches_hint(key, params) or "."
            raise UnknownNameError(
                f"model 'clip' ({where}) has no parameter '{key}'{hint} Known: {', '.join(params)}"
            )

