"""Point prompts on a frozen prompt-capable classifier (PROTOCOL.md section 4, "Point prompt").

``PromptedClassifier(victim, num_prompts)`` holds ``P`` learnable tokens of the encoder's
width ``W`` and classifies with ``victim(points, prompts=tokens)``: the tokens enter the
point transformer once, right after CLS, with a zero positional embedding. The victim
stays frozen (no parameter requires grad) and in eval mode whatever mode the wrapper is
put in, so its BatchNorm statistics never move; only the tokens train. ``prompt-at``
(``defenses.adversarial_training``) and MRPD (``defenses.mrpd``) train these tokens.

Victims that take prompts are the models registered with the tag ``clip-space``
(``bench list models``): an :class:`~models.heads.EmbeddingClassifier` whose encoder has
``width`` and ``encode(points, prompts=None)``.
"""
from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from benchmark.core.registry import MODELS
from models.heads import EmbeddingClassifier  # noqa: F401 - importing models registers the families

__all__ = ["PointPrompt", "PromptedClassifier", "prompt_capable_models", "supports_prompts"]

#: Registry tag of the models whose encoder takes prompt tokens.
PROMPT_TAG = "clip-space"


def prompt_capable_models() -> list[str]:
    """Registered model names that take point prompts (tagged ``clip-space``)."""
    return sorted(e.name for e in MODELS.entries() if PROMPT_TAG in e.tags)


def _takes_prompts(fn: object) -> bool:
    try:
        return callable(fn) and "prompts" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def supports_prompts(model: nn.Module) -> bool:
    """True when ``model(points, prompts=...)`` works: an encoder with an int ``width`` and
    ``encode(points, prompts)``, and a ``forward`` taking ``prompts``."""
    encoder = getattr(model, "encoder", None)
    width = getattr(encoder, "width", None)
    return (
        isinstance(width, int)
        and _takes_prompts(getattr(encoder, "encode", None))
        and _takes_prompts(getattr(model, "forward", None))
    )


class PointPrompt(nn.Module):
    """``P`` learnable point-prompt tokens ``[P, W]``, initialised ``std * N(0, 1)`` from ``seed``.

    A module of its own so that its state dict is the prompts alone (what a trained
    defense caches), not the frozen victim's weights.
    """

    def __init__(self, num_prompts: int, width: int, *, seed: int = 0, std: float = 1.0) -> None:
        super().__init__()
        if not isinstance(num_prompts, int) or num_prompts < 1:
            raise ValueError(f"num_prompts must be an int >= 1; got {num_prompts!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be an int >= 1; got {width!r}")
        generator = torch.Generator().manual_seed(int(seed))
        self.tokens = nn.Parameter(std * torch.randn(num_prompts, width, generator=generator))

    @property
    def num_prompts(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def width(self) -> int:
        return int(self.tokens.shape[1])

    def forward(self) -> Tensor:
        """The tokens ``[P, W]``."""
        return self.tokens


class PromptedClassifier(nn.Module):
    """A frozen prompt-capable classifier plus learnable point prompts: ``[B, N, 3] -> [B, C]``.

    Args:
        victim: an :class:`~models.heads.EmbeddingClassifier`-like model taking
            ``prompts`` (see :func:`supports_prompts`). It is frozen here
            (``requires_grad_(False)``) and kept in eval mode; its weights are never changed.
        num_prompts: ``P``, tokens inserted after CLS (MRPD: 10).
        seed: seeds the N(0, 1) initialisation (PROTOCOL.md section 4).
        std: initial standard deviation of the tokens.

    Raises:
        ValueError: when ``victim`` cannot take prompts (naming the models that can).
    """

    def __init__(self, victim: nn.Module, num_prompts: int = 10, *, seed: int = 0, std: float = 1.0) -> None:
        super().__init__()
        if not supports_prompts(victim):
            raise ValueError(
                f"point prompts need a prompt-capable victim (an encoder with `width` and "
                f"`encode(points, prompts)`); {type(victim).__name__} takes no prompts. Use one of the "
                f"models tagged '{PROMPT_TAG}': {', '.join(prompt_capable_models())} (see: bench list models)"
            )
        victim.requires_grad_(False)
        self.victim = victim.eval()
        ref = next(iter(victim.parameters()), None)
        self.prompt = PointPrompt(num_prompts, int(victim.encoder.width), seed=seed, std=std)
        if ref is not None:
            self.prompt.to(device=ref.device, dtype=ref.dtype)
        self.class_names = tuple(getattr(victim, "class_names", ()) or ())

    @property
    def prompts(self) -> Tensor:
        """The learnable tokens ``[P, W]`` (a parameter)."""
        return self.prompt.tokens

    @property
    def num_prompts(self) -> int:
        return self.prompt.num_prompts

    @property
    def num_classes(self) -> int | None:
        return getattr(self.victim, "num_classes", None)

    def train(self, mode: bool = True) -> PromptedClassifier:
        """Set the wrapper's mode; the frozen victim always stays in eval mode."""
        super().train(mode)
        self.victim.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """``[prompts]``: the only parameters to optimise.

        Raises:
            RuntimeError: when anything else requires grad (the victim must stay frozen).
        """
        extra = [n for n, p in self.named_parameters() if p.requires_grad and p is not self.prompt.tokens]
        if extra:
            raise RuntimeError(
                f"a prompted classifier trains its prompts only, but {', '.join(extra[:5])}"
                f"{' ...' if len(extra) > 5 else ''} require grad; freeze the victim (requires_grad_(False))"
            )
        return [self.prompt.tokens]

    def embed(self, points: Tensor) -> Tensor:
        """The victim's raw embedding ``[B, D]`` of ``points`` ``[B, N, 3]`` with the prompts."""
        return self.victim.encoder.encode(points, self.prompts)

    def forward(self, points: Tensor) -> Tensor:
        """``points`` ``[B, N, 3]`` float32 -> logits ``[B, C]`` of the prompted victim."""
        return self.victim(points, prompts=self.prompts)

    def extra_repr(self) -> str:
        return f"num_prompts={self.num_prompts}, width={self.prompt.width}"
