"""An example third-party plug-in, written the way a user writes one: a decorated class in its own module.

Importing it (``--plugin demo_plugin`` or a ``bench.plugins`` entry point) registers the model
``demo-centroid``. It imports nothing heavy, so tests can load it in-process in milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass

from models import register_model

NAME = "demo-centroid"


@register_model(NAME)
@dataclass
class DemoCentroid:
    """Demo plug-in model: classifies a cloud by its nearest class centroid.

    Only used by the tests of plug-in loading.
    """

    num_classes: int = 4
    radius: float = 0.5
