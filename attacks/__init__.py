"""Adversarial attacks on point cloud classifiers, one module per family, registered by name.

Register a new attack with ``@register_attack("name")``; ``bench list attacks`` shows it.
"""
from benchmark.registry import ATTACKS

register_attack = ATTACKS.register

__all__ = ["ATTACKS", "register_attack"]
