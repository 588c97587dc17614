"""Victim and teacher architectures: PointNet, DGCNN, PointNet++, the prompt-capable point
transformer, the Uni3D encoders (official checkpoints), the open_clip teacher and the AdvPC
autoencoder.

Register a new model with ``@register_model("name")`` on a builder returning an
``nn.Module`` (``[B, N, 3] -> logits [B, C]`` for classifiers); ``bench list models`` shows it.
``models.zoo`` trains or loads them (imported on demand: it pulls in the training stack).
"""
from benchmark.core.registry import MODELS

register_model = MODELS.register

# Importing the families registers them (open_clip itself is imported lazily by models.clip).
from . import autoencoder, clip, dgcnn, pointnet, pointnet2, point_transformer, uni3d  # noqa: E402,F401

__all__ = ["MODELS", "register_model"]
