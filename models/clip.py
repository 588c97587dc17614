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
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.registry import UnknownNameError, close_matches_hint
from models import register_model

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

#: MRPD's class prompt (PROTOCOL.md section 4); learnable context tokens go before it.
DEFAULT_PROMPT_TEMPLATE = "A depth picture of {}."
#: Plain prompts of the zero-shot head (``encode_text_classes``): mean over these.
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "A depth picture of {}.",
    "A depth map of a {}.",
    "A point cloud depth map of a {}.",
    "A rendered depth image of a {}.",
)
#: open_clip's default ("OpenAI") image normalisation, used when nothing better is known.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_CKPT_HINT = "clip_checkpoint=/path/to/open_clip_model.safetensors"


class MissingClipWeightsError(FileNotFoundError):
    """A named CLIP architecture without a local weights file (PCRB never downloads)."""


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


# -- prompts and the zero-shot head ---------------------------------------------------------------
class PromptedTextEncoder(nn.Module):
    """CoOp text prompts: ``n_ctx`` learnable context vectors shared by all classes.

    The prompt of class c is ``"X " * n_ctx + template.format(name)`` (underscores in names
    become spaces); the token embeddings of the X's (positions 1..n_ctx, right after SOS)
    are replaced by ``ctx`` ``[n_ctx, text_width]`` ~ N(0, ctx_std). Everything else is
    open_clip's ``encode_text``: + positional embedding, transformer with the model's
    attention mask, ln_final, pooling at EOT (the configured pool type), projection.
    ``forward()`` -> class embeddings ``[C, D]``, raw unless ``normalize=True``. With
    ``n_ctx=0`` this is bitwise ``clip.encode_text(clip.tokenize(prompts))`` for a frozen
    teacher (``clip.freeze()``); while the teacher's weights require grad, PyTorch may
    pick differently rounded CPU kernels for ``encode_text`` (differences ~1e-6).

    The CLIP stays frozen: it is held by reference (not a submodule), so ``parameters()``
    and ``state_dict()`` hold ``ctx`` alone, and its weights enter the computation
    detached, so no gradient ever reaches them, whatever their ``requires_grad``.
    ``.to()``/``.cuda()``/``.half()`` on this module are applied to the CLIP too, as for a
    submodule. The prompts' frozen token embeddings are computed once, at construction
    (non-persistent buffer): build a new encoder if the CLIP's weights change.
    """

    def __init__(
        self,
        clip: ClipTeacher,
        class_names: Sequence[str],
        n_ctx: int = 3,
        template: str = DEFAULT_PROMPT_TEMPLATE,
        ctx_std: float = 0.05,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n_ctx < 0:
            raise ValueError(f"n_ctx must be >= 0, got {n_ctx}")
        object.__setattr__(self, "_clip", clip)  # plain attribute: not a submodule
        parts = _text_parts(clip.model, prompting=True)
        self.n_ctx = int(n_ctx)
        self.class_names = list(class_names)
        self.prompts = ["X " * n_ctx + template.format(c.replace("_", " ")) for c in self.class_names]
        _check_prompt_lengths(clip, self.prompts)
        tokens = clip.tokenize(self.prompts)
        if n_ctx:
            x_id = clip.tokenize("X")[0, 1]
            if not bool((tokens[:, 1 : 1 + n_ctx] == x_id).all()):
                raise ValueError(f"the tokenizer did not give one token per 'X' in {self.prompts[0]!r}")
        cast_dtype = parts["transformer"].get_cast_dtype()
        with torch.no_grad():
            embeddings = parts["token_embedding"](tokens).to(cast_dtype)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("token_embeddings", embeddings, persistent=False)
        gen = torch.Generator().manual_seed(seed)
        ctx = torch.randn(n_ctx, clip.text_width, generator=gen) * ctx_std
        self.ctx = nn.Parameter(ctx.to(device=embeddings.device, dtype=torch.float32))

    @property
    def clip(self) -> ClipTeacher:
        return self._clip

    def forward(self, normalize: bool = False) -> Tensor:
        """Class text embeddings ``[C, D]`` from the prompts with the current ``ctx``."""
        from open_clip.transformer import text_global_pool

        parts = _text_parts(self.clip.model, prompting=True)
        x = self.token_embeddings
        if self.n_ctx:
            ctx = self.ctx.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], ctx, x[:, 1 + self.n_ctx :]], dim=1)
        length = x.shape[1]
        x = x + parts["positional_embedding"].detach()[:length].to(x.dtype)
        mask = parts["attn_mask"]
        if mask is not None and mask.shape[-1] != length:
            mask = mask[:length, :length]
        x = _frozen_call(parts["transformer"], x, attn_mask=mask)
        x = _frozen_call(parts["ln_final"], x)
        x = text_global_pool(x, self.tokens, parts["pool_type"], eos_token_id=parts["eos_id"])
        proj = parts["text_projection"]
        if isinstance(proj, nn.Linear):
            x = _frozen_call(proj, x)
        elif proj is not None:
            x = x @ proj.detach()
        return F.normalize(x, dim=-1) if normalize else x

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> PromptedTextEncoder:
        self.clip._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"n_ctx={self.n_ctx}, classes={len(self.class_names)}, teacher={self.clip.name!r}"


def encode_text_classes(
    clip: ClipTeacher,
    class_names: Sequence[str],
    templates: Sequence[str] = ZERO_SHOT_TEMPLATES,
    batch_size: int = 256,
) -> Tensor:
    """Zero-shot head: ``[C, D]`` L2-normalised class embeddings, mean over ``templates``.

    Each prompt ``template.format(name)`` (underscores to spaces) is encoded and normalised,
    the mean over templates is normalised again (CLIP's zero-shot recipe). Gradients are
    kept; wrap in ``torch.no_grad()`` for a frozen teacher.
    """
    if not templates:
        raise ValueError("encode_text_classes needs at least one template")
    prompts = [t.format(c.replace("_", " ")) for c in class_names for t in templates]
    chunks = [
        clip.encode_text(clip.tokenize(prompts[i : i + batch_size]), normalize=True)
        for i in range(0, len(prompts), batch_size)
    ]
    per_prompt = torch.cat(chunks).view(len(class_names), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


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


def _frozen_call(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` with its parameters detached: gradients flow to inputs only."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, args, kwargs)


def _check_prompt_lengths(clip: ClipTeacher, prompts: Sequence[str]) -> None:
    encode = getattr(clip.tokenizer, "encode", None)
    if encode is None:
        return
    for prompt in prompts:
        if len(encode(prompt)) + 2 > clip.context_length:
            raise ValueError(
                f"prompt {prompt!r} needs more than the text tower's {clip.context_length} tokens; "
                "shorten the template or n_ctx"
            )


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
