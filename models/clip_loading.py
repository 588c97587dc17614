"""A named open_clip architecture with LOCAL weights (``build_clip``, ``load_clip_checkpoint``):
the architecture checked, created without any download, the checkpoint loaded strictly, the
image normalisation chosen; every failure names the file or architecture and the fix.

``import open_clip`` costs seconds (it pulls in torchvision), so it happens inside the
functions, never at import time of this module. Floor 1: imports torch,
``benchmark.core.registry`` and :mod:`models.clip_teacher`.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.core.registry import UnknownNameError, close_matches_hint
from models.clip_teacher import OPENAI_MEAN, OPENAI_STD, ClipTeacher

__all__ = ["MissingClipWeightsError", "build_clip", "load_clip_checkpoint"]

_CKPT_HINT = "clip_checkpoint=/path/to/open_clip_model.safetensors"


class MissingClipWeightsError(FileNotFoundError):
    """A named CLIP architecture without a local weights file (PCRB never downloads)."""


def build_clip(
    model_name: str,
    checkpoint: str | Path | None,
    *,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> ClipTeacher:
    """A named open_clip architecture (``"ViT-B-32"``, ``"EVA02-E-14-plus"``) with LOCAL weights.

    Nothing is ever downloaded: the model is created with random weights
    (``open_clip.create_model(..., pretrained=None, load_weights=False)``, no tower
    weights) and ``checkpoint`` is then loaded from disk (safetensors, or
    ``torch.load(weights_only=True)``). Architectures whose text tower or tokenizer comes
    from Hugging Face (SigLIP, XLM-R, ...) are refused, since building them would fetch
    files. ``image_mean``/``image_std`` default to those that open_clip records for every
    pretrained tag of the architecture (OpenAI's when they disagree, with a warning).
    Returned in eval mode.
    """
    import open_clip

    name = _check_arch(open_clip, model_name)
    if checkpoint is None:
        raise MissingClipWeightsError(
            f"CLIP weights for '{name}' must be a local file: pass {_CKPT_HINT}; PCRB never downloads"
        )
    path = _check_checkpoint_path(open_clip, name, checkpoint)
    with _quiet_random_init_warning():
        model = open_clip.create_model(
            name, pretrained=None, load_weights=False, pretrained_image=False,
            pretrained_text=False, device=device,
        )
    _load_state(open_clip, model, path, name)
    mean, std = _normalisation(open_clip, name, model, image_mean, image_std)
    tokenizer = open_clip.get_tokenizer(name, context_length=model.context_length)
    return ClipTeacher(
        model.eval(), tokenizer, image_mean=mean, image_std=std, name=name,
        config=open_clip.get_model_config(name),
    )


def load_clip_checkpoint(teacher: ClipTeacher, checkpoint: str | Path) -> ClipTeacher:
    """Load a local open_clip state dict (``teacher.model.state_dict()`` format) into ``teacher``, strictly."""
    import open_clip

    path = _check_checkpoint_path(open_clip, teacher.name, checkpoint)
    _load_state(open_clip, teacher.model, path, teacher.name)
    return teacher


# -- helpers ----------------------------------------------------------------------------------
def _check_arch(open_clip: Any, model_name: str) -> str:
    known = open_clip.list_models()
    if model_name not in known:
        hint = close_matches_hint(model_name, [*known, "tiny"]) or "."
        where = ""
        if model_name.startswith(("hf-hub:", "local-dir:")):
            where = " PCRB takes a built-in architecture name plus a local weights file, never a hub or folder id."
        raise UnknownNameError(
            f"unknown open_clip architecture '{model_name}'{hint}{where} Names: open_clip.list_models() "
            f"({len(known)} of them), or 'tiny' for the embedded default"
        )
    text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
    needs_hf = text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name") or "siglip" in model_name.lower()
    if needs_hf:
        raise NotImplementedError(
            f"open_clip architecture '{model_name}' builds its text tower or tokenizer from Hugging Face "
            "files, which PCRB never downloads; use an architecture with open_clip's own text "
            "transformer and BPE tokenizer (e.g. 'ViT-B-32', 'ViT-L-14', 'EVA02-E-14-plus')"
        )
    return model_name


def _check_checkpoint_path(open_clip: Any, name: str, checkpoint: str | Path) -> Path:
    path = Path(checkpoint).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise MissingClipWeightsError(
            f"CLIP checkpoint '{path}' for '{name}' is a directory; pass the weights file in it, "
            f"e.g. {path / 'open_clip_model.safetensors'}"
        )
    tag = ""
    if str(checkpoint) in open_clip.list_pretrained_tags_by_model(name):
        tag = f" ('{checkpoint}' is an open_clip pretrained tag: download its file yourself and pass the path)"
    raise MissingClipWeightsError(
        f"CLIP checkpoint '{path}' for '{name}' does not exist{tag}; pass {_CKPT_HINT} "
        "(a local file; PCRB never downloads)"
    )


def _load_state(open_clip: Any, model: nn.Module, path: Path, name: str) -> None:
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as err:  # re-raised with the file and architecture named
        raise ValueError(
            f"cannot load CLIP checkpoint '{path}' into architecture '{name}': {type(err).__name__}: {err}"
        ) from err


def _normalisation(
    open_clip: Any, name: str, model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[Sequence[float], Sequence[float]]:
    """Explicit values, else the ones every pretrained tag of ``name`` agrees on, else the model's default."""
    if mean is not None and std is not None:
        return mean, std
    cfgs = [open_clip.get_pretrained_cfg(name, t) for t in open_clip.list_pretrained_tags_by_model(name)]
    pairs = {(tuple(c["mean"]), tuple(c["std"])) for c in cfgs if "mean" in c and "std" in c}
    if len(pairs) == 1:
        tag_mean, tag_std = pairs.pop()
    else:
        pp = open_clip.get_model_preprocess_cfg(model)
        tag_mean, tag_std = tuple(pp.get("mean", OPENAI_MEAN)), tuple(pp.get("std", OPENAI_STD))
        if len(pairs) > 1:
            warnings.warn(
                f"open_clip's pretrained tags of '{name}' use different image normalisations; using "
                f"mean={tag_mean}, std={tag_std}. Pass image_mean/image_std to match your checkpoint.",
                stacklevel=3,
            )
    return (mean if mean is not None else tag_mean), (std if std is not None else tag_std)


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded" log line: PCRB loads the weights itself next."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No pretrained weights loaded" not in record.getMessage()

    root, drop = logging.getLogger(), _Drop()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
