"""Typed run configuration, profiles, merging and the stable config hash.

A run's configuration is resolved in this order, later winning:

    profile YAML (benchmark/core/profiles/<name>.yaml, optionally ``base:`` another profile)
      < user YAML (``--config file.yaml``)
      < ``--set dotted.key=value`` overrides (values parsed as YAML scalars)
      < explicit CLI flags (``--attack``, ``--seed``, ...)

Selections and parameters are kept apart: ``attack: [pgd, cw]`` (what ``--attack`` sets)
chooses what runs, while ``attacks: {pgd: {budget: 0.08}}`` holds parameters by registry
name. The same holds for ``defense``/``defenses``; ``models`` and ``datasets`` hold
per-model parameters and per-reader options (``datasets: {synthshapes: {train_size: 2048}}``),
so switching ``dataset.name`` never passes one reader's options to another.
Unknown keys are errors naming the key and its closest known spelling.

One module per concept, every name re-exported here (import from ``benchmark.core.config``):
:mod:`benchmark.core.config_types` (``RunConfig``, ``DatasetConfig``, ``TrainConfig``),
:mod:`benchmark.core.config_profiles` (profiles, user YAML, ``--set``, ``resolve_config``,
``check_params``), :mod:`benchmark.core.config_dicts` (safe YAML loading, dict -> dataclass
checks, ``deep_merge``, ``to_jsonable``, ``config_hash``).
"""
from __future__ import annotations

from benchmark.core.config_dicts import (  # noqa: F401  (private names re-exported for old callers)
    _FLOAT_RE,
    ConfigError,
    PCRBSafeLoader,
    _convert,
    _from_dict,
    _type_name,
    config_hash,
    deep_merge,
    load_yaml,
    to_jsonable,
)
from benchmark.core.config_profiles import (  # noqa: F401
    _drop_none,
    available_profiles,
    check_params,
    load_profile,
    load_user_config,
    parse_set,
    resolve_config,
)
from benchmark.core.config_types import PROTOCOLS, DatasetConfig, RunConfig, TrainConfig, expand_protocols  # noqa: F401

__all__ = [
    "PROTOCOLS",
    "ConfigError",
    "DatasetConfig",
    "RunConfig",
    "TrainConfig",
    "available_profiles",
    "check_params",
    "config_hash",
    "deep_merge",
    "load_profile",
    "load_yaml",
    "parse_set",
    "resolve_config",
    "to_jsonable",
]

