"""MRPD, multimodal robust prompt distillation (Du et al., arXiv 2511.21574, AAAI 2026).

- ``losses``: confidence gate, gated symmetric InfoNCE, label InfoNCE, uncertainty weighting;
- ``defense``: the registered ``mrpd`` defense (teachers, feature cache, schedule, switches);
- ``control``: ``prompt-at``, MRPD without teachers (its matched control).
"""
from defenses.mrpd import losses  # noqa: F401
from defenses.mrpd.defense import MRPD, MRPDClassifier, MRPDPrompts  # noqa: F401
from defenses.mrpd.control import PromptAT  # noqa: F401

__all__ = ["MRPD", "MRPDClassifier", "MRPDPrompts", "PromptAT"]
