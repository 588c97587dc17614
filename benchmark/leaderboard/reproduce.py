"""The ``bench run`` command that reproduces a leaderboard section, from its run records.

The command names the section's profile, dataset, victim (and surrogate), defenses, attacks,
protocol and seed as flags, and every stored configuration field that differs from the
profile's and changes numbers as ``--set KEY=VALUE``; runs of a section that disagree on
those give one command each.
"""
from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

import pandas as pd

from benchmark.leaderboard.sections import Section, section_runs, section_shards
from benchmark.store import CLEAN

__all__ = ["reproduce_commands", "reproduce_overrides"]

#: Config fields a reproduce command passes as flags (or that do not change numbers), not as --set.
_FLAG_FIELDS = ("profile", "defense", "attack", "protocol", "seed", "limit", "out_dir", "cache_dir", "plugins",
                "device", "victim", "surrogate", "dataset.name", "dataset.root")


def _yaml_value(value: Any) -> str:
    """A --set value YAML parses back to ``value`` (JSON is YAML)."""
    from benchmark.core.config import load_yaml

    if isinstance(value, str):
        try:
            plain = load_yaml(value) == value and all(c.isalnum() or c in "-_./" for c in value)
        except ValueError:
            plain = False
        return value if plain else json.dumps(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, dotted + "."))
        elif not isinstance(value, Mapping):
            out[dotted] = value
    return out


def reproduce_overrides(config: Mapping[str, Any]) -> list[str]:
    """``KEY=VALUE`` strings that, passed as ``--set`` over ``config['profile']``, give ``config``.

    Only fields that change numbers and that no flag of the reproduce command carries are
    listed; ``[]`` when the profile cannot be loaded (then the stored parameters are the truth).
    """
    from benchmark.core.config import ConfigError, resolve_config

    try:
        base = resolve_config(str(config.get("profile") or "default")).to_dict()
    except (ConfigError, OSError, ValueError):
        return []
    flat_base, flat = _flatten(base), _flatten(config)
    out = []
    for key in sorted(flat):
        if any(key == f or key.startswith(f + ".") for f in _FLAG_FIELDS):
            continue
        if key in flat_base and flat_base[key] == flat[key]:
            continue
        out.append(f"{key}={_yaml_value(flat[key])}")
    return out


def reproduce_commands(section: Section, rows: pd.DataFrame, runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One ``bench run`` command per distinct set of overrides among the section's runs."""
    metas = section_runs(rows, runs)
    configs = [m["config"] for m in metas if isinstance(m.get("config"), Mapping)]
    shards = section_shards(metas)
    limits = sorted({int(c["limit"]) for c in configs if c.get("limit") is not None})
    full = any(c.get("limit") is None or int(c["limit"]) > section.n for c in configs) and not shards
    roots = sorted({str(c.get("dataset", {}).get("root")) for c in configs if c.get("dataset", {}).get("root")})
    devices = sorted({str(c.get("device")) for c in configs if c.get("device") not in (None, "auto")})
    override_sets = sorted({tuple(reproduce_overrides(c)) for c in configs}) or [()]
    defenses = [d for d in sorted(set(rows["defense_name"])) if d != "none"]
    attacks = sorted({str(a) for a in rows["attack_name"] if a != CLEAN})
    args = ["bench", "run", "--profile", section.profile, "--dataset", section.dataset]
    if roots:
        args += ["--data-root", "DIR"]
    args += ["--victim", section.victim]
    if section.surrogate:
        args += ["--surrogate", section.surrogate]
    args += ["--defense", ",".join(["none", *defenses])] + (["--attack", ",".join(attacks)] if attacks else [])
    args += ["--protocol", section.protocol, "--seed", str(section.seed)]
    if shards:  # rows of one shard of a run (bench run --shard i/K; combine with bench merge)
        args += ["--shard", shards[0]] + (["--limit", str(limits[0])] if limits else [])
    elif not full:
        args += ["--limit", str(section.n)]
    if devices:
        args += ["--device", devices[0]]
    return [" ".join(shlex.quote(a) for a in [*args, *(f for item in overrides for f in ("--set", item))])
            for overrides in override_sets]
