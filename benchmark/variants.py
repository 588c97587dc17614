"""Variants: a result computed with other parameters than its profile's is another result.

A result row is keyed by (dataset, profile, protocol, victim, source, defense, attack, seed,
n, shard) *and* by two variant labels, the short diff of the run's configuration against
its profile's that can change that cell:

- ``defense_variant``: the defense's own parameters (``defenses.<defense>.*``) and training
  budget (``training.<defense>.*``, shown as ``training.<field>``), plus every setting that
  changes all cells (dataset, models, the victim's training: shown by their dotted key);
  ``eot`` for adaptive cells;
- ``attack_variant``: the attack's own parameters (``attacks.<attack>.*``).

Both are ``""`` for the profile's own settings, so ``bench run --set defenses.mrpd.epochs=50``
writes a row labelled ``mrpd [epochs=50]`` beside the profile's ``mrpd`` row instead of
replacing it. Selections, paths, the device, the batch size (results do not depend on it,
up to rounding: ``attacks.invariance``) and the key's own fields are not part of a variant.

Floor 0: the standard library only.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["IGNORED_KEYS", "cell_variants", "flatten", "label"]

#: Top-level config keys that never make a variant: selections, paths, the device, the batch
#: size, and what the row's key already holds.
IGNORED_KEYS: tuple[str, ...] = (
    "profile", "defense", "attack", "protocol", "seed", "limit", "out_dir", "cache_dir", "plugins", "device",
    "victim", "surrogate", "batch_size", "dataset.name", "dataset.root",
)

_MISSING = object()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; empty mappings vanish, lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def cell_variants(
    config: Mapping[str, Any],
    base: Mapping[str, Any],
    *,
    defense: str,
    attack: str,
    protocol: str,
    defense_names: Collection[str] = (),
    training_section: str | None = None,
) -> tuple[str, str]:
    """``(defense_variant, attack_variant)`` of one cell: the settings of ``config`` (the run's
    resolved configuration, ``RunConfig.to_dict()``) that differ from ``base`` (its profile's)
    and can change this cell, as ``key=value`` joined by ``"; "`` in key order.

    Args:
        defense, attack: the cell's registry names (``attack="clean"``: no attack variant).
        protocol: the cell's protocol (``eot`` matters for ``adaptive`` only).
        defense_names: every registered defense (their ``training.<name>`` sections concern
            only that defense's cells).
        training_section: the ``training.<section>`` the cell's defense trains with when it is
            not its own name (``prompt-at`` trains with ``training.mrpd``).
    """
    flat, flat_base = flatten(config), flatten(base)
    defense_parts: list[str] = []
    attack_parts: list[str] = []
    for key in sorted(set(flat) | set(flat_base)):
        value = flat.get(key, _MISSING)
        if value == flat_base.get(key, _MISSING):
            continue
        shown = "null" if value is _MISSING else _text(value)
        section, _, rest = key.partition(".")
        name, _, field = rest.partition(".")
        if section == "attacks":
            if name == attack:
                attack_parts.append(f"{field}={shown}")
        elif section == "defenses":
            if name == defense:
                defense_parts.append(f"{field}={shown}")
        elif section == "training" and name in defense_names:
            if name == (training_section or defense):
                defense_parts.append(f"training.{field}={shown}")
        elif key == "eot":
            if protocol == "adaptive":
                defense_parts.append(f"eot={shown}")
        elif not _ignored(key):
            defense_parts.append(f"{key}={shown}")
    return "; ".join(defense_parts), "; ".join(attack_parts)


def label(name: str, variant: Any) -> str:
    """``"mrpd"`` or ``"mrpd [epochs=50]"``: how tables show a defense or attack and its variant."""
    text = variant.strip() if isinstance(variant, str) else ""
    return f"{name} [{text}]" if text else name
