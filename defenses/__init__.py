"""Defenses: preprocessing (SRS, SOR, DUP-Net, IF-Defense) and model defenses (adversarial training, MRPD).

Register a new defense with ``@register_defense("name")`` on a ``Defense`` subclass
(``defenses.base``); ``bench list defenses`` shows it. ``build_defense(name, **params)``
builds a registered one with its defaults overridden.
"""
from typing import Any

from benchmark.core.config import ConfigError
from benchmark.core.registry import DEFENSES

register_defense = DEFENSES.register

from defenses.base import (  # noqa: E402
    Defense,
    DefenseContext,
    DefendedModel,
    ModelDefense,
    PreprocessDefense,
    PreprocessedModel,
    as_defended,
    inference_cost,
    straight_through,
)


def build_defense(name: str, **params: Any) -> Defense:
    """The registered defense ``name`` with ``params`` overriding its defaults; it remembers
    the name it was built under (one class may be registered under several presets).

    Raises:
        UnknownNameError: unknown defense or parameter name (with close matches).
        ConfigError: a value outside its declared domain, naming ``defenses.<name>``.
    """
    entry = DEFENSES.get(name)
    entry.check_params(params, where=f"defenses.{name}")
    try:
        defense = entry.build(**params)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"defenses.{name}: {err} (fix it with --set defenses.{name}.<field>=<value>)") from None
    defense.registry_name = name
    return defense


# Importing the modules registers the defenses, in the order tables list them.
from defenses import none  # noqa: E402,F401,I001
from defenses import srs, sor, dupnet  # noqa: E402,F401,I001
from defenses import if_defense  # noqa: E402,F401,I001
from defenses import adversarial_training, mrpd  # noqa: E402,F401,I001

__all__ = [
    "DEFENSES",
    "Defense",
    "DefenseContext",
    "DefendedModel",
    "ModelDefense",
    "PreprocessDefense",
    "PreprocessedModel",
    "as_defended",
    "build_defense",
    "inference_cost",
    "register_defense",
    "straight_through",
]
