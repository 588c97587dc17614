"""Parameter domains (``benchmark.core.params``) and the one attack factory (``attacks.factory``):
every registered parameter with a domain rejects a value outside it, naming the field; the
attack seed rule; helper models declared by the attack and resolved by the caller; a bad
value on the command line fails before any work."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import attacks  # noqa: F401 - registers the attacks
import defenses  # noqa: F401 - registers the defenses
from attacks.advpc import AdvPC
from attacks.factory import attack_spec, build_attack
from benchmark.core.config import ConfigError
from benchmark.core.params import Domain, check_fields, count, domains, fraction, param, positive
from benchmark.core.registry import ATTACKS, DEFENSES, UnknownNameError
from defenses import build_defense

# ------------------------------------------------------------------------------ the domains


def test_a_domain_accepts_exactly_its_values():
    budget = Domain("float", gt=0.0)
    assert budget.accepts(0.08) and budget.accepts(2)  # an int is a number
    assert not any(budget.accepts(v) for v in (0.0, -1, float("nan"), float("inf"), True, "0.1", None))
    steps = Domain("int", ge=1)
    assert steps.accepts(1) and not any(steps.accepts(v) for v in (0, 2.0, True, None))
    share = Domain("float", ge=0.0, le=1.0, optional=True)
    assert share.accepts(None) and share.accepts(1) and not share.accepts(1.01)
    loss = Domain("str", choices=("ce", "margin"))
    assert loss.accepts("margin") and not loss.accepts("hinge") and not loss.accepts(None)
    assert Domain("bool").accepts(False) and not Domain("bool").accepts(0)


def test_domains_describe_themselves_for_messages():
    assert Domain("int", ge=1).describe() == "an int >= 1"
    assert Domain("float", ge=0.0, le=1.0).describe() == "a number in [0, 1]"
    assert Domain("float", gt=0.0, optional=True).describe() == "a number > 0 (or null)"
    assert Domain("str", choices=("l2", "linf")).describe() == "one of 'l2', 'linf'"


@dataclasses.dataclass
class _Base:
    steps: int = count(3)
    share: float = fraction(0.5)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass
class _Child(_Base):
    steps: int = 7  # a plain redeclaration keeps the base's domain
    lr: float = positive(0.1)


def test_a_plain_redeclaration_keeps_the_base_domain_and_errors_name_the_field():
    assert set(domains(_Child)) == {"steps", "share", "lr"}
    assert _Child().steps == 7
    with pytest.raises(ValueError, match=r"_Child: steps must be an int >= 1; got 0"):
        _Child(steps=0)
    with pytest.raises(ValueError, match=r"share must be a number in \[0, 1\]; got 1.5"):
        _Child(share=1.5)


def test_a_default_outside_its_own_domain_is_a_declaration_error():
    with pytest.raises(ValueError, match="default"):
        param(-1, ge=0)


# ------------------------------------------------------------ every registered parameter


def _outside(domain: Domain) -> object:
    """A value that ``domain`` rejects."""
    if domain.choices is not None:
        return "not-a-choice"
    if domain.kind == "bool":
        return "yes"
    if domain.kind == "str":
        return 3
    for bound, delta in ((domain.gt, 0.0), (domain.ge, -1.0), (domain.lt, 0.0), (domain.le, 1.0)):
        if bound is not None:
            return type(bound)(bound + delta) if domain.kind == "float" else int(bound + delta)
    return 0.5 if domain.kind == "int" else "text"


def _cases(registry):
    for entry in registry.entries():
        if not dataclasses.is_dataclass(entry.obj):
            continue
        for name, domain in domains(entry.obj).items():
            if name in entry.defaults:
                yield pytest.param(entry.name, name, _outside(domain), id=f"{entry.name}.{name}")


@pytest.mark.parametrize("attack, field, value", list(_cases(ATTACKS)))
def test_every_attack_parameter_outside_its_domain_is_a_config_error(attack, field, value):
    with pytest.raises(ConfigError, match=rf"attacks\.{attack}: .*{field} must be"):
        attack_spec(attack, {field: value})


@pytest.mark.parametrize("defense, field, value", list(_cases(DEFENSES)))
def test_every_defense_parameter_outside_its_domain_is_a_config_error(defense, field, value):
    with pytest.raises(ConfigError, match=rf"defenses\.{defense}: .*{field} must be"):
        build_defense(defense, **{field: value})


def test_every_numeric_attack_hyperparameter_declares_a_domain():
    undeclared = [f"{e.name}.{k}" for e in ATTACKS.entries() for k, v in e.defaults.items()
                  if isinstance(v, (int, float, str)) and k not in domains(e.obj)]
    assert undeclared == []


# --------------------------------------------------------------------------- the factory


def test_an_explicit_attack_seed_wins_over_the_run_seed():
    assert attack_spec("pgd", {"seed": 3}, seed=0).seed == 3
    assert attack_spec("pgd", {}, seed=5).seed == 5
    assert attack_spec("pgd").seed == ATTACKS.get("pgd").defaults["seed"]


def test_unknown_parameters_list_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean 'budget'"):
        attack_spec("pgd", {"budgte": 0.1})


class _Doubler(nn.Module):
    def forward(self, x):
        return x


def test_an_attack_declares_its_models_and_the_factory_resolves_each_once():
    asked = []

    def resolve(name: str) -> nn.Module:
        asked.append(name)
        return _Doubler()

    attack = build_attack("advpc", {"autoencoder": "my-ae", "num_iter": 1}, resolve_model=resolve)
    assert asked == ["my-ae"] and attack.required_models() == {"autoencoder": "my-ae"}
    assert isinstance(attack._require_ae(), _Doubler)
    assert build_attack("pgd", resolve_model=resolve).required_models() == {} and asked == ["my-ae"]
    with pytest.raises(ValueError, match="resolve_model"):
        build_attack("advpc")
    with pytest.raises(ValueError, match="needs no model called decoder"):
        AdvPC().bind_models(decoder=_Doubler())


# ------------------------------------------------------------------ the command line


def _bench(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PCRB_CACHE_DIR": str(tmp_path / "cache"), "PCRB_NO_TUNE": "1"}
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("setting", ["attacks.pgd.budget=-1", "defenses.srs.num_drop=-5",
                                     "attacks.cw.loss=hinge", "defenses.mrpd.gate_bank=none"])
def test_a_bad_parameter_fails_in_seconds_before_any_data_or_model_work(tmp_path, setting):
    start = time.perf_counter()
    proc = _bench(tmp_path, "run", "--profile", "smoke", "--attack", "pgd", "--defense", "srs,mrpd",
                  "--set", setting, "--out", str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    section, name, field = setting.split("=")[0].split(".")
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"{section}.{name}" in errors[0] and field in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.*"))  # nothing generated
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - start < 60


def test_bench_attack_takes_an_attack_seed(tmp_path):
    proc = _bench(tmp_path, "attack", "--attack", "pgd", "--set", "attacks.pgd.seed=3", "--set", "attacks.pgd.budget=0",
                  "--profile", "smoke")
    assert proc.returncode == 2 and "attacks.pgd: PGD: budget must be a number > 0; got 0" in proc.stderr
    assert "multiple values" not in proc.stderr and not (tmp_path / "cache").exists()


def test_the_seed_rule_reaches_the_crafted_examples():
    from tiny_models import TinyPointNet, frozen, unit_clouds

    model, x = frozen(TinyPointNet()), unit_clouds(3, 32, seed=1)
    y = model(x).argmax(1)
    run_seed, own_seed = attack_spec("pgd", {"steps": 1}, seed=1), attack_spec("pgd", {"steps": 1, "seed": 1}, seed=9)
    a, b = run_seed(model, x, y), own_seed(model, x, y)
    assert torch.equal(a.target, b.target) and torch.equal(a.points, b.points)
