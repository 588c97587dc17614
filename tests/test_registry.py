"""Specification of benchmark.core.registry: registration, lookup with close matches, plug-in loading."""
from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmark.core.registry import (
    MODELS,
    DuplicateNameError,
    PluginError,
    Registry,
    UnknownNameError,
    load_plugins,
)

PLUGIN_MODULE = "demo_plugin"
PLUGIN_ENTRY = "demo-centroid"


@pytest.fixture
def attacks() -> Registry:
    """A fresh attack registry holding pgd, cw and knn (in that order)."""
    reg = Registry("attack")

    @reg.register("pgd")
    @dataclass
    class PGD:
        """Projected gradient descent on the points.

        Second line, not shown by `bench list`.
        """

        budget: float = 0.08
        steps: int = 200

    @reg.register("cw")
    @dataclass
    class CW:
        """Carlini-Wagner."""

        kappa: float = 0.0

    @reg.register("knn")
    def knn_attack(k: int = 5):
        """kNN attack."""
        return ("knn", k)

    return reg


@pytest.fixture
def fresh_plugin():
    """Import ``demo_plugin`` anew inside the test and forget it (and its model) afterwards."""
    sys.modules.pop(PLUGIN_MODULE, None)
    if PLUGIN_ENTRY in MODELS:
        MODELS.remove(PLUGIN_ENTRY)
    yield
    sys.modules.pop(PLUGIN_MODULE, None)
    if PLUGIN_ENTRY in MODELS:
        MODELS.remove(PLUGIN_ENTRY)


def make_dist(folder: Path, name: str, entry_points: str) -> None:
    """Write a minimal installed distribution (``<name>-0.1.dist-info``) advertising ``entry_points``."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


# ----------------------------------------------------------------------------- registration


def test_decorator_returns_the_object_unchanged():
    reg = Registry("model")

    class Net:
        pass

    assert reg.register("net")(Net) is Net


def test_entry_keeps_name_kind_object_and_module(attacks):
    entry = attacks.get("pgd")
    assert entry.name == "pgd"
    assert entry.kind == "attack"
    assert entry.obj.__name__ == "PGD"
    assert entry.module == __name__


def test_dataclass_fields_become_defaults(attacks):
    assert dict(attacks.get("pgd").defaults) == {"budget": 0.08, "steps": 200}


def test_dataclass_default_factory_fields_become_defaults():
    reg = Registry("defense")

    @reg.register("sor")
    @dataclass
    class SOR:
        ks: list = field(default_factory=lambda: [2, 4])
        alpha: float = 1.1

    assert dict(reg.get("sor").defaults) == {"ks": [2, 4], "alpha": 1.1}


def test_function_keyword_defaults_become_defaults_and_required_ones_do_not():
    reg = Registry("model")

    @reg.register("dgcnn")
    def dgcnn(num_classes, k=20, *, emb_dims=1024, **extra):
        return None

    assert dict(reg.get("dgcnn").defaults) == {"k": 20, "emb_dims": 1024}


def test_description_is_the_first_docstring_line(attacks):
    assert attacks.get("pgd").description == "Projected gradient descent on the points."


def test_description_is_empty_without_a_docstring():
    reg = Registry("model")
    reg.add("bare", lambda: None)
    assert reg.get("bare").description == ""


def test_explicit_description_wins_over_the_docstring():
    reg = Registry("model")

    @reg.register("net", description="Shown to users.")
    def net():
        """Docstring line."""

    assert reg.get("net").description == "Shown to users."


def test_register_keyword_defaults_are_added_on_top_of_the_objects():
    reg = Registry("model")

    @reg.register("net-small", width=8)
    @dataclass
    class Net:
        width: int = 32
        depth: int = 2

    assert dict(reg.get("net-small").defaults) == {"width": 8, "depth": 2}


def test_register_rejects_a_default_the_object_does_not_take():
    reg = Registry("model")

    @dataclass
    class Net:
        width: int = 32

    with pytest.raises(ValueError, match="no parameter 'widht'; did you mean 'width'"):
        reg.register("net-small", widht=8)(Net)


def test_default_name_is_the_lowercased_object_name_in_kebab_case():
    reg = Registry("attack")

    @reg.register()
    def Add_CD():
        pass

    assert reg.names() == ["add-cd"]


@pytest.mark.parametrize("bad", ["PGD", "add cd", "add_cd", "", "-pgd", "pgd-", "pgd/x"])
def test_invalid_names_are_rejected(bad):
    reg = Registry("attack")
    with pytest.raises(ValueError, match="kebab"):
        reg.add(bad, object())


@pytest.mark.parametrize("good", ["pgd", "add-cd", "drop-200", "pointnet2-ssg", "uni3d.g"])
def test_lowercase_kebab_names_are_accepted(good):
    reg = Registry("attack")
    reg.add(good, object())
    assert good in reg


def test_registering_a_taken_name_raises_duplicate_name_error(attacks):
    with pytest.raises(DuplicateNameError, match="'pgd' is already registered.*override=True"):
        attacks.add("pgd", object())


def test_override_true_replaces_the_entry(attacks):
    replacement = object()
    attacks.add("pgd", replacement, override=True)
    assert attacks.get("pgd").obj is replacement
    assert attacks.names() == ["pgd", "cw", "knn"]


def test_remove_forgets_a_name(attacks):
    attacks.remove("cw")
    assert "cw" not in attacks
    assert attacks.names() == ["pgd", "knn"]


def test_remove_of_an_unknown_name_raises(attacks):
    with pytest.raises(UnknownNameError):
        attacks.remove("nope")


# ----------------------------------------------------------------------------------- lookup


def test_unknown_name_error_suggests_the_close_match_and_the_list_command(attacks):
    with pytest.raises(UnknownNameError) as info:
        attacks.get("pgb")
    message = str(info.value)
    assert "'pgb'" in message
    assert "did you mean 'pgd'" in message
    assert "bench list attacks" in message


def test_unknown_name_without_close_match_lists_the_known_names(attacks):
    with pytest.raises(UnknownNameError, match="Known attacks: pgd, cw, knn"):
        attacks.get("zzzzzz")


def test_unknown_name_error_is_a_lookup_error(attacks):
    with pytest.raises(LookupError):
        attacks.get("nope")


def test_registry_plural_names_the_list_command():
    reg = Registry("dataset")
    with pytest.raises(UnknownNameError, match="bench list datasets"):
        reg.get("x")


# ---------------------------------------------------------------------------------- resolve


def test_resolve_all_gives_every_name_in_registration_order(attacks):
    assert attacks.resolve("all") == ["pgd", "cw", "knn"]


def test_resolve_comma_list_keeps_the_users_order_and_strips_spaces(attacks):
    assert attacks.resolve("knn, pgd") == ["knn", "pgd"]


def test_resolve_removes_duplicates(attacks):
    assert attacks.resolve("knn,pgd,knn,all") == ["knn", "pgd", "cw"]


def test_resolve_accepts_a_sequence(attacks):
    assert attacks.resolve(["cw", "pgd"]) == ["cw", "pgd"]


def test_resolve_of_nothing_gives_the_default(attacks):
    assert attacks.resolve(None, default=["pgd"]) == ["pgd"]
    assert attacks.resolve("", default=["cw"]) == ["cw"]


def test_resolve_of_an_unknown_name_raises_with_close_match(attacks):
    with pytest.raises(UnknownNameError, match="did you mean 'pgd'"):
        attacks.resolve("cw,pgb")


# ------------------------------------------------------------------------- params and build


def test_check_params_accepts_known_parameters(attacks):
    attacks.get("pgd").check_params({"budget": 0.1, "steps": 10})


def test_check_params_rejects_an_unknown_parameter_naming_the_close_match(attacks):
    with pytest.raises(UnknownNameError) as info:
        attacks.get("pgd").check_params({"budjet": 0.1}, where="attacks.pgd")
    message = str(info.value)
    assert message.startswith("attacks.pgd: ")
    assert "'budjet'" in message
    assert "did you mean 'budget'" in message


def test_check_params_accepts_anything_for_a_var_kwargs_factory():
    reg = Registry("model")
    reg.add("free", lambda **kw: kw)
    reg.get("free").check_params({"anything": 1})


def test_build_passes_parameters_to_the_object(attacks):
    pgd = attacks.build("pgd", budget=0.5)
    assert (pgd.budget, pgd.steps) == (0.5, 200)


def test_build_rejects_an_unknown_parameter(attacks):
    with pytest.raises(UnknownNameError, match="did you mean 'steps'"):
        attacks.build("pgd", stpes=3)


def test_build_applies_the_defaults_given_at_registration():
    reg = Registry("model")

    @reg.register("net-small", width=8)
    @reg.register("net-large", width=64)
    @dataclass
    class Net:
        width: int = 32

    assert reg.build("net-small").width == 8
    assert reg.build("net-large").width == 64


@pytest.mark.parametrize(
    ("package", "decorator"),
    [("models", "register_model"), ("benchmark.core.data", "register_dataset"),
     ("attacks", "register_attack"), ("defenses", "register_defense")],
)
def test_each_package_exposes_its_register_decorator(package, decorator):
    assert callable(getattr(importlib.import_module(package), decorator))


# ---------------------------------------------------------------------------------- plug-ins


def test_load_plugins_imports_a_named_module_which_registers_its_entries(fresh_plugin):
    loaded = load_plugins([PLUGIN_MODULE], entry_points=False)
    assert loaded == [PLUGIN_MODULE]
    entry = MODELS.get(PLUGIN_ENTRY)
    assert entry.description.startswith("Demo plug-in model")
    assert dict(entry.defaults) == {"num_classes": 4, "radius": 0.5}


def test_load_plugins_names_a_missing_module():
    with pytest.raises(PluginError, match="'pcrb_no_such_plugin'.*PYTHONPATH"):
        load_plugins(["pcrb_no_such_plugin"], entry_points=False)


def test_load_plugins_names_a_plugin_whose_own_code_fails(tmp_path, monkeypatch):
    (tmp_path / "pcrb_failing_plugin.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delitem(sys.modules, "pcrb_failing_plugin", raising=False)
    with pytest.raises(PluginError, match="'pcrb_failing_plugin' failed while importing: RuntimeError: boom"):
        load_plugins(["pcrb_failing_plugin"], entry_points=False)


def test_entry_points_of_group_bench_plugins_are_loaded(tmp_path, monkeypatch, fresh_plugin):
    make_dist(tmp_path, "pcrb_demo_dist", f"[bench.plugins]\ndemo = {PLUGIN_MODULE}\n")
    monkeypatch.syspath_prepend(tmp_path)
    seen = importlib.metadata.entry_points(group="bench.plugins")
    assert PLUGIN_MODULE in [ep.value for ep in seen]

    loaded = load_plugins()
    assert PLUGIN_MODULE in loaded
    assert PLUGIN_ENTRY in MODELS


def test_a_broken_entry_point_only_warns(tmp_path, monkeypatch):
    make_dist(tmp_path, "pcrb_broken_dist", "[bench.plugins]\nbroken = pcrb_no_such_plugin_module\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.warns(UserWarning, match="ignoring bench.plugins entry point 'broken'"):
        loaded = load_plugins()
    assert "pcrb_no_such_plugin_module" not in loaded
