"""CoOp text prompting on a frozen CLIP teacher (``PromptedTextEncoder``: learnable context
tokens before MRPD's class prompt) and the plain zero-shot head (``encode_text_classes``).

Floor 1: imports torch and :mod:`models.clip_teacher`; ``open_clip`` only inside ``forward``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.clip_teacher import ClipTeacher, _text_parts

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "ZERO_SHOT_TEMPLATES", "PromptedTextEncoder", "encode_text_classes"]

#: MRPD's class prompt (PROTOCOL.md section 4); learnable context tokens go before it.
DEFAULT_PROMPT_TEMPLATE = "A depth picture of {}."
#: Plain prompts of the zero-shot head (``encode_text_classes``): mean over these.
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "A depth picture of {}.",
    "A depth map of a {}.",
    "A point cloud depth map of a {}.",
    "A rendered depth image of a {}.",
)


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
