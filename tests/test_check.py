"""The `paper` profile runs the published attack settings, and ``bench check`` proves a profile's grid
can run (every model, checkpoint and dataset file loads; one batch goes through every defense and
attack) and says what the full grid will cost, before hours are spent on it."""
from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any

import pytest

from attacks.factory import attack_spec
from benchmark.core.config import load_yaml, resolve_config
from benchmark.core.registry import ATTACKS, populate_registries

populate_registries()

#: Where PROTOCOL.md's `paper` value differs from the attack class's registered default:
#: ``{attack: {field: (value, reason)}}``. Empty: every registered default is the published value.
PROTOCOL_OVERRIDES: dict[str, dict[str, tuple[Any, str]]] = {}

#: Fields that are not hyperparameters of the published method (the run's seed fills ``seed``).
NOT_SETTINGS = ("seed",)


def _settings(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    attack = attack_spec(name, params)
    return {k: v for k, v in dataclasses.asdict(attack).items() if k not in NOT_SETTINGS}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_the_paper_profile_runs_every_attack_at_its_published_settings(name):
    published = _settings(name, None)
    published.update({k: value for k, (value, _) in PROTOCOL_OVERRIDES.get(name, {}).items()})
    resolved = _settings(name, resolve_config("paper").attacks.get(name))
    assert {k: v for k, v in resolved.items() if published[k] != v} == {}, (
        f"the paper profile runs {name} with settings `default` reduced; pin them in profiles/paper.yaml")


@pytest.mark.parametrize("name", ATTACKS.names())
def test_the_ifd_profile_changes_only_what_its_own_file_lists(name):
    text = (resources.files("benchmark.core") / "profiles" / "ifd.yaml").read_text()
    listed = (load_yaml(text).get("attacks") or {}).get(name) or {}
    expected = {**_settings(name, None), **listed}
    assert _settings(name, resolve_config("ifd").attacks.get(name)) == expected
