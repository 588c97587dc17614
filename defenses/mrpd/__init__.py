"""MRPD, multimodal robust prompt distillation (Du et al., arXiv 2511.21574, AAAI 2026).

- ``defense``: the registered ``mrpd`` defense (its switches; wires the parts below);
- ``teachers``: the frozen image / point teachers and their cached embeddings of the training clouds;
- ``prompts``: what MRPD learns (point prompts, text context, temperatures, log-variances),
  the fitted text-context start, and the defended classifier;
- ``training``: the optimisation loop (losses, weighting, adversarial half, epoch selection);
- ``losses``: confidence gate, gated symmetric InfoNCE, label InfoNCE, uncertainty weighting;
- ``diagnostics``: the teacher-robustness tables (``bench teachers``);
- ``control``: ``prompt-at``, MRPD without teachers (its matched control).
"""
from defenses.mrpd import losses  # noqa: F401
from defenses.mrpd.defense import MRPD, MRPDClassifier, MRPDPrompts  # noqa: F401
from defenses.mrpd.control import PromptAT  # noqa: F401

__all__ = ["MRPD", "MRPDClassifier", "MRPDPrompts", "PromptAT"]
