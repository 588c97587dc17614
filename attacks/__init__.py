"""Adversarial attacks on point cloud classifiers, one module per family, registered by name.

Register a new attack with ``@register_attack("name")``; ``bench list attacks`` shows it.
"""
from benchmark.registry import ATTACKS

register_attack = ATTACKS.register

# Importing the families registers them.
from attacks import add, advpc, aof, base, constraints, crafting, cw, drop, knn, losses, pgd, search  # noqa: E402,F401

__all__ = ["ATTACKS", "register_attack"]
