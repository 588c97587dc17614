"""The one way to build a registered attack: parameters, the seed rule and helper models.

    attack = build_attack("advpc", {"num_iter": 50}, seed=run_seed,
                          resolve_model=lambda name: zoo.get(name).model)

Every caller (the runner, ``bench attack``, adversarial-training defenses, the benchmark
scripts) goes through :func:`build_attack` (or :func:`attack_spec` when it only needs the
hyperparameters, e.g. for a cache key), so the same configuration always gives the same
attack.

**Seed rule.** An attack's own ``seed`` (``--set attacks.pgd.seed=3``, or ``params``) wins;
otherwise the run's seed fills it. Attacks without a ``seed`` field ignore the run's seed.

**Helper models.** An attack that needs another model declares it with
``Attack.required_models()`` (``slot -> registry model name``; AdvPC: its autoencoder).
:func:`build_attack` resolves each name once through ``resolve_model`` (the harness passes
its model zoo) and hands the modules over with ``Attack.bind_models``; the attack never
builds or trains models itself.

**Bad parameters** (unknown names, values outside a field's domain) raise
``benchmark.core.config.ConfigError`` naming ``attacks.<name>`` and the fix, before any work.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from attacks.base import Attack
from benchmark.core.config import ConfigError
from benchmark.core.registry import ATTACKS, UnknownNameError

__all__ = ["attack_spec", "build_attack", "resolved_params"]

ModelResolver = Callable[[str], nn.Module]


def resolved_params(name: str, params: Mapping[str, Any] | None = None, *, seed: int | None = None) -> dict[str, Any]:
    """The keyword arguments ``name`` is built with: ``params``, plus the run's ``seed`` when
    the attack has a ``seed`` field that ``params`` does not set (the attack's own seed wins)."""
    entry = ATTACKS.get(name)
    out = dict(params or {})
    if seed is not None and "seed" in entry.defaults and "seed" not in out:
        out["seed"] = int(seed)
    return out


def attack_spec(name: str, params: Mapping[str, Any] | None = None, *, seed: int | None = None) -> Attack:
    """The registered attack ``name`` with ``params`` over its defaults and the seed rule of the
    module docstring; helper models are not bound (enough for hashing and validation).

    Raises:
        UnknownNameError: unknown attack or parameter name (with close matches).
        ConfigError: a value outside its declared domain, naming ``attacks.<name>.<field>``.
    """
    kwargs = resolved_params(name, params, seed=seed)
    entry = ATTACKS.get(name)
    entry.check_params(kwargs, where=f"attacks.{name}")
    try:
        attack = entry.build(**kwargs)
    except UnknownNameError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"attacks.{name}: {err} (fix it with --set attacks.{name}.<field>=<value>)") from None
    return attack


def build_attack(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    resolve_model: ModelResolver | None = None,
) -> Attack:
    """:func:`attack_spec`, then every model the attack declares resolved once through
    ``resolve_model(model_name) -> nn.Module`` and bound.

    Raises:
        ValueError: the attack needs a model and no ``resolve_model`` was given.
    """
    attack = attack_spec(name, params, seed=seed)
    needed = attack.required_models()
    if needed:
        if resolve_model is None:
            wanted = ", ".join(f"{slot} ({model})" for slot, model in needed.items())
            raise ValueError(f"attack '{name}' needs the model(s) {wanted}; pass resolve_model= (e.g. "
                             "lambda name: zoo.get(name).model) to attacks.factory.build_attack")
        attack.bind_models(**{slot: resolve_model(model) for slot, model in needed.items()})
    return attack
