"""Victim and teacher architectures: PointNet, DGCNN, PointNet++, the prompt-capable point transformer, CLIP teachers.

Register a new model with ``@register_model("name")``; ``bench list models`` shows it.
"""
from benchmark.registry import MODELS

register_model = MODELS.register

__all__ = ["MODELS", "register_model"]
