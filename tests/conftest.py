"""Shared test setup: make the example plug-ins in ``tests/plugins`` importable by name."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

PLUGINS_DIR = Path(__file__).parent / "plugins"

if str(PLUGINS_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGINS_DIR))


@pytest.fixture
def plugins_dir() -> Path:
    """The folder holding the example plug-in modules (``demo_plugin``)."""
    return PLUGINS_DIR
