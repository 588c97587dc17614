"""``prompt-at``: MRPD's matched control — everything MRPD does except distilling from teachers.

The same learned parameters (point prompts, text context, temperatures, log-variances), the
same classifier (the student with its prompts against the prompted class embeddings), the
same training settings (``training.mrpd``: epochs, learning rate, schedule), the same
clean -> adversarial schedule on the same crafted training set, the same selection rule and
early stop; the only loss is the label InfoNCE against the text embeddings (MRPD with
``teachers=[text]``). A difference between ``mrpd`` and ``prompt-at`` is then the teachers'
doing. Keep ``defenses.prompt-at`` equal to ``defenses.mrpd`` in a profile (the shipped
profiles do, by a YAML anchor, and ``tests/test_mrpd.py`` checks it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from benchmark.core.params import Ablation
from defenses import register_defense
from defenses.mrpd.defense import MRPD

__all__ = ["PromptAT"]


@register_defense("prompt-at")
@dataclass
class PromptAT(MRPD):
    """Prompt adversarial training: MRPD without the image and point teachers (``teachers=[text]``).

    Takes every MRPD switch except ``teachers`` (fixed); trains with ``training.mrpd``.
    """

    defense_name: ClassVar[str] = "prompt-at"
    ablations: ClassVar[dict[str, Ablation]] = {}
    ablation_control: ClassVar[str | None] = None
    mechanisms: ClassVar[dict[str, str]] = {}

    teachers: list[str] = field(default_factory=lambda: ["text"])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.teachers != ["text"]:
            raise ValueError(f"prompt-at is MRPD without teachers: teachers is fixed to ['text']; got {self.teachers} "
                             "(for other teacher sets use mrpd with --set defenses.mrpd.teachers=...)")
