"""Resolving a run's configuration: shipped profiles (with ``base:`` inheritance), the user's
YAML file, ``--set dotted.key=value`` overrides and CLI flags, merged in that order into a
``RunConfig``; and registry parameters checked against their entries.

Import everything from :mod:`benchmark.core.config`. Floor 0: imports ``benchmark.core`` only.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from benchmark.core.config_dicts import ConfigError, _from_dict, deep_merge, load_yaml
from benchmark.core.config_types import RunConfig
from benchmark.core.registry import Registry, UnknownNameError, close_matches_hint

__all__ = ["available_profiles", "check_params", "load_profile", "load_user_config", "parse_set", "resolve_config"]


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``benchmark/core/profiles``."""
    folder = resources.files("benchmark.core") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_profile(name: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The profile ``name`` as a dict, with its ``base:`` profiles merged underneath."""
    if name in _seen:
        raise ConfigError(f"profile inheritance loops: {' -> '.join((*_seen, name))}")
    known = available_profiles()
    if name not in known:
        raise ConfigError(
            f"unknown profile '{name}'{close_matches_hint(name, known) or '.'} "
            f"Shipped profiles: {', '.join(known)}; or give your own file with --config"
        )
    text = (resources.files("benchmark.core") / "profiles" / f"{name}.yaml").read_text()
    data = load_yaml(text, f"profile '{name}'") or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"profile '{name}' must be a mapping at top level")
    base = data.pop("base", None)
    if base:
        data = deep_merge(load_profile(str(base), (*_seen, name)), data)
    data["profile"] = name
    return data


def load_user_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A user's YAML config file as a dict."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    data = load_yaml(p.read_text(), str(p)) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file '{p}' must hold a mapping (key: value lines) at top level")
    return dict(data)


def parse_set(assignments: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}`` (values as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects dotted.key=value, got {item!r}")
        parts = key.split(".")
        if any(not p for p in parts):
            raise ConfigError(f"--set key {key!r} has an empty part")
        value = load_yaml(raw, f"--set {item}") if raw.strip() else None
        node = out
        for part in parts[:-1]:
            existing = node.get(part)
            if not isinstance(existing, dict):
                existing = node[part] = {}
            node = existing
        node[parts[-1]] = value
    return out


def resolve_config(
    profile: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Merge profile < config file < ``--set`` overrides < explicit flags into a ``RunConfig``.

    ``flags`` hold already-structured values from CLI options (None values are ignored),
    e.g. ``{"attack": "pgd,cw", "dataset": {"root": "~/data"}}``. ``profile`` None means the
    config file's ``profile:`` key, else ``default``; an explicit ``profile`` wins over the file's.
    """
    user = load_user_config(config_file) if config_file is not None else {}
    file_profile = user.pop("profile", None)
    data = load_profile(str(profile or file_profile or "default"))
    data = deep_merge(data, user)
    sets = parse_set(overrides)
    if "profile" in sets:
        raise ConfigError(
            "the profile cannot be changed with --set (its values would not follow); use --profile NAME"
        )
    data = deep_merge(data, sets)
    if flags:
        data = deep_merge(data, _drop_none(flags))
    return _from_dict(RunConfig, data)


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in mapping.items():
        if isinstance(v, Mapping):
            v = _drop_none(v)
            if not v:
                continue
        if v is not None:
            out[k] = v
    return out


def check_params(section: str, params: Mapping[str, Mapping[str, Any]], registry: Registry) -> None:
    """Check ``attacks:``/``defenses:``/``models:`` parameters against the registered entries.

    Raises ``ConfigError`` for a name the registry lacks or a parameter its entry does not take.
    """
    for name, values in params.items():
        try:
            entry = registry.get(name)
            entry.check_params(values or {}, where=f"{section}.{name}")
        except UnknownNameError as err:
            raise ConfigError(f"in '{section}': {err}") from err
