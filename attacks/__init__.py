"""Adversarial attacks on point cloud classifiers, one module per family, registered by name.

Register a new attack with ``@register_attack("name")``; ``bench list attacks`` shows it.
Build one with ``build_attack(name, params, seed=..., resolve_model=...)`` (``attacks.factory``):
the one factory every caller uses.

Tags say what an attack is for: ``strong`` (meant to fool an undefended model on >= 90% of
the clouds at its profile's settings; the leaderboard ranks defenses by the clouds that
survive every strong attack), ``min-norm`` (budget-free: it reports each cloud's minimal
adversarial distance, ``benchmark.core.curves``); untagged attacks are reported, not ranked on
(the paper-budget PGD family and saliency drop fool the embedded victim rarely).
"""
from benchmark.core.registry import ATTACKS

register_attack = ATTACKS.register

# Importing the families registers them.
from attacks import add, advpc, aof, apgd, base, constraints, crafting, cw, drop, fmn, knn, losses, pgd, search  # noqa: E402,F401
from attacks.factory import attack_spec, build_attack  # noqa: E402

__all__ = ["ATTACKS", "attack_spec", "build_attack", "register_attack"]
