"""Defenses: preprocessing (SRS, SOR, DUP-Net, IF-Defense) and model defenses (adversarial training, MRPD).

Register a new defense with ``@register_defense("name")``; ``bench list defenses`` shows it.
"""
from benchmark.registry import DEFENSES

register_defense = DEFENSES.register

__all__ = ["DEFENSES", "register_defense"]
