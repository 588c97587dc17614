"""Specification of benchmark.core.config: profiles, merge order, --set parsing, errors and the config hash."""
from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from benchmark.core.config import (
    ConfigError,
    RunConfig,
    available_profiles,
    check_params,
    config_hash,
    load_profile,
    load_yaml,
    parse_set,
    resolve_config,
    to_jsonable,
)
from benchmark.core.registry import Registry


def write_yaml(folder: Path, text: str, name: str = "user.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------- profiles


def test_the_four_design_profiles_are_shipped():
    assert {"smoke", "default", "paper", "ifd"} <= set(available_profiles())


@pytest.mark.parametrize("name", available_profiles())
def test_every_shipped_profile_resolves_into_a_run_config(name):
    cfg = resolve_config(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.profile == name


def test_smoke_inherits_what_it_does_not_set_from_default():
    default, smoke = load_profile("default"), load_profile("smoke")
    assert "base" not in smoke
    assert smoke["victim"] == default["victim"]
    assert smoke["dataset"]["name"] == default["dataset"]["name"] == "synthshapes"
    assert smoke["dataset"]["sampling"] == default["dataset"]["sampling"]


def test_smoke_overrides_what_it_sets():
    cfg = resolve_config("smoke")
    assert cfg.dataset.num_points == 256
    assert cfg.batch_size == 16
    assert cfg.limit == 16
    assert cfg.datasets["synthshapes"] == {"train_size": 192, "test_size": 48}


def test_ifd_inherits_through_two_levels_of_base():
    assert resolve_config("ifd").dataset.name == resolve_config("paper").dataset.name == "modelnet40"


def test_unknown_profile_is_a_config_error_with_close_match():
    with pytest.raises(ConfigError, match="unknown profile 'smok'; did you mean 'smoke'"):
        resolve_config("smok")


# -------------------------------------------------------------------------------- merge order


def test_config_file_wins_over_profile(tmp_path):
    cfg = resolve_config("default", write_yaml(tmp_path, "seed: 1\n"))
    assert cfg.seed == 1


def test_set_wins_over_config_file(tmp_path):
    cfg = resolve_config("default", write_yaml(tmp_path, "seed: 1\n"), ["seed=2"])
    assert cfg.seed == 2


def test_flags_win_over_set(tmp_path):
    cfg = resolve_config("default", write_yaml(tmp_path, "seed: 1\n"), ["seed=2"], {"seed": 3})
    assert cfg.seed == 3


def test_flags_that_are_none_leave_lower_layers_alone():
    cfg = resolve_config("default", None, ["seed=2"], {"seed": None, "dataset": {"name": None, "root": None}})
    assert cfg.seed == 2
    assert cfg.dataset.name == "synthshapes"


def test_layers_merge_key_by_key_inside_sections(tmp_path):
    cfg = resolve_config("smoke", write_yaml(tmp_path, "dataset:\n  sampling: fps\n"), ["dataset.num_points=128"])
    assert (cfg.dataset.name, cfg.dataset.sampling, cfg.dataset.num_points) == ("synthshapes", "fps", 128)


def test_a_config_file_may_name_the_profile_it_builds_on(tmp_path):
    cfg = resolve_config(None, write_yaml(tmp_path, "profile: smoke\nseed: 5\n"))
    assert (cfg.profile, cfg.limit, cfg.seed) == ("smoke", 16, 5)


def test_an_explicit_profile_wins_over_the_config_files(tmp_path):
    cfg = resolve_config("default", write_yaml(tmp_path, "profile: smoke\nseed: 5\n"))
    assert (cfg.profile, cfg.limit, cfg.seed) == ("default", None, 5)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config("default", tmp_path / "absent.yaml")


def test_config_file_that_is_not_a_mapping_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config("default", write_yaml(tmp_path, "- a\n- b\n"))


def test_set_profile_cannot_label_a_run_with_a_profile_whose_values_it_lacks():
    try:
        cfg = resolve_config("default", None, ["profile=smoke"])
    except ConfigError:
        return  # rejecting it (use --profile) is a fine answer too
    assert cfg.profile != "smoke" or cfg.limit == resolve_config("smoke").limit


# -------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_names_the_key_and_its_close_match(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'atack'; did you mean 'attack'"):
        resolve_config("default", write_yaml(tmp_path, "atack: [pgd]\n"))


def test_unknown_nested_key_names_the_dotted_key_and_its_close_match():
    with pytest.raises(ConfigError, match="unknown config key 'dataset.nmu_points'; did you mean 'num_points'"):
        resolve_config("default", None, ["dataset.nmu_points=3"])


# -------------------------------------------------------------------------------- type errors


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("seed=abc", "seed: expected an integer"),
        ("seed=1.5", "seed: expected an integer"),
        ("seed=true", "seed: expected an integer"),
        ("batch_size=0", "batch_size must be >= 1"),
        ("limit=0", "limit must be >= 1"),
        ("dataset.num_points=0", "num_points must be >= 1"),
        ("dataset.sampling=bogus", "dataset.sampling: 'bogus' is not one of first, random, fps"),
        ("dataset.normalize=maybe", "dataset.normalize: expected true or false"),
        ("protocol=transfr", "unknown protocol 'transfr'; did you mean 'transfer'"),
        ("dataset=5", "dataset: expected a mapping"),
        ("attacks.pgd=5", "attacks.pgd: expected a mapping"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_config_error_naming_the_key(assignment, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("default", None, [assignment])


def test_protocol_all_expands_to_every_protocol():
    assert resolve_config("default", None, ["protocol=all"]).protocol == ["transfer", "blackbox", "adaptive"]


# ------------------------------------------------------------------------------ --set parsing


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("0.5", 0.5),
        ("1e-3", 0.001),
        ("5e3", 5000.0),
        ("5E+4", 50000.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[a, b]", ["a", "b"]),
        ("pgd", "pgd"),
    ],
)
def test_set_values_are_parsed_as_yaml_scalars(raw, value):
    parsed = parse_set([f"x={raw}"])["x"]
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize(("raw", "value"), [("-.5", -0.5), ("+.5", 0.5), (".5e3", 500.0)])
def test_set_reads_leading_dot_numbers_as_floats(raw, value):
    assert parse_set([f"x={raw}"])["x"] == value


def test_set_builds_nested_dicts_from_dotted_keys():
    assert parse_set(["attacks.pgd.budget=0.04", "attacks.pgd.steps=10", "seed=1"]) == {
        "attacks": {"pgd": {"budget": 0.04, "steps": 10}},
        "seed": 1,
    }


def test_set_with_an_empty_value_gives_null():
    assert parse_set(["limit="]) == {"limit": None}


def test_set_attack_takes_a_comma_list():
    assert resolve_config("default", None, ["attack=pgd,cw"]).attack == ["pgd", "cw"]


def test_attack_and_defense_flags_take_comma_lists():
    cfg = resolve_config("default", flags={"attack": "pgd, cw", "defense": "sor"})
    assert (cfg.attack, cfg.defense) == (["pgd", "cw"], ["sor"])


@pytest.mark.parametrize("bad", ["seed", "=3", "a..b=1"])
def test_malformed_set_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="--set"):
        parse_set([bad])


# ------------------------------------------------------------------------------------- YAML


def test_load_yaml_refuses_python_object_tags(tmp_path):
    marker = tmp_path / "executed"
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        load_yaml(f'!!python/object/apply:os.system ["touch {marker}"]', "evil.yaml")
    assert not marker.exists()


def test_load_yaml_syntax_error_names_the_source():
    with pytest.raises(ConfigError, match="in my.yaml"):
        load_yaml("a: [1, 2\n", "my.yaml")


# -------------------------------------------------------------------------------------- hash


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})


def test_config_hash_changes_with_a_value():
    assert config_hash({"a": 1, "b": 2}) != config_hash({"a": 1, "b": 3})


def test_config_hash_is_sixteen_hex_digits_by_default():
    digest = config_hash({"a": 1})
    assert len(digest) == 16
    int(digest, 16)


def test_run_config_hash_is_stable_across_resolutions():
    assert resolve_config("smoke").hash() == resolve_config("smoke").hash()


def test_run_config_hash_changes_with_a_semantic_value():
    assert resolve_config("smoke").hash() != resolve_config("smoke", None, ["seed=1"]).hash()


@pytest.mark.parametrize("where", ["cache_dir=/tmp/elsewhere", "out_dir=/tmp/results2", "plugins=[my.plugin]"])
def test_run_config_hash_ignores_where_things_go(where):
    assert resolve_config("smoke").hash() == resolve_config("smoke", None, [where]).hash()


def test_to_jsonable_converts_dataclasses_paths_tuples_and_numpy_scalars():
    @dataclasses.dataclass
    class Point:
        where: PurePosixPath
        size: tuple

    data = {"p": Point(PurePosixPath("/a/b"), (1, 2)), "f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True)}
    out = to_jsonable(data)
    assert out == {"p": {"where": "/a/b", "size": [1, 2]}, "f": 0.5, "i": 3, "b": True}
    assert (type(out["f"]), type(out["i"]), type(out["b"])) == (float, int, bool)


def test_to_jsonable_refuses_unknown_types():
    with pytest.raises(TypeError, match="cannot hash"):
        to_jsonable({"x": object()})


# -------------------------------------------------------------------------- check_params


@pytest.fixture
def attacks() -> Registry:
    reg = Registry("attack")

    @reg.register("pgd")
    @dataclasses.dataclass
    class PGD:
        budget: float = 0.08
        steps: int = 200

    return reg


def test_check_params_accepts_known_names_and_parameters(attacks):
    check_params("attacks", {"pgd": {"budget": 0.1}}, attacks)


def test_check_params_rejects_an_unknown_name_with_close_match(attacks):
    with pytest.raises(ConfigError, match="in 'attacks': unknown attack 'pgb'; did you mean 'pgd'"):
        check_params("attacks", {"pgb": {}}, attacks)


def test_check_params_rejects_an_unknown_parameter_with_close_match(attacks):
    with pytest.raises(ConfigError, match="attacks.pgd: attack 'pgd' has no parameter 'bugdet'; did you mean 'budget'"):
        check_params("attacks", {"pgd": {"bugdet": 0.1}}, attacks)


def test_non_finite_floats_hash_differently_from_their_spelling_as_strings():
    assert config_hash({"a": float("nan")}) != config_hash({"a": "nan"})


@pytest.mark.parametrize("profile", ["smoke", "default", "paper", "ifd"])
def test_every_shipped_profile_names_only_real_parameters(profile):
    import attacks  # noqa: F401  (registers the attacks)
    import models  # noqa: F401
    from benchmark.core.config import check_params
    from benchmark.core.registry import ATTACKS, MODELS

    cfg = resolve_config(profile)
    check_params("attacks", cfg.attacks, ATTACKS)
    check_params("models", cfg.models, MODELS)
