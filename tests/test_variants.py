"""Variant labels (``benchmark.variants``): which settings make a cell another result."""
from __future__ import annotations

from benchmark.core.config import resolve_config
from benchmark.variants import cell_variants, label

DEFENSES = ("none", "sor", "mrpd", "prompt-at")


def variants(overrides, defense="mrpd", attack="pgd", protocol="transfer", flags=None, training_section=None):
    base = resolve_config("default").to_dict()
    run = resolve_config("default", None, list(overrides), flags or {}).to_dict()
    return cell_variants(run, base, defense=defense, attack=attack, protocol=protocol, defense_names=DEFENSES,
                         training_section=training_section)


def test_the_profile_itself_is_no_variant():
    assert variants([]) == ("", "")
    # selections, paths, the device and the batch size never make a variant
    assert variants(["batch_size=8"], flags={"out_dir": "elsewhere", "device": "cpu", "limit": 16,
                                             "attack": "pgd,cw", "cache_dir": "/tmp/x"}) == ("", "")


def test_own_parameters_label_only_their_own_cells():
    assert variants(["defenses.mrpd.epochs=50"]) == ("epochs=50", "")
    assert variants(["defenses.mrpd.epochs=50"], defense="sor") == ("", "")
    assert variants(["attacks.pgd.budget=0.16"]) == ("", "budget=0.16")
    assert variants(["attacks.pgd.budget=0.16"], attack="cw") == ("", "")
    assert variants(["defenses.mrpd.teachers=[image,text]"]) == ('teachers=["image","text"]', "")


def test_training_budgets_label_their_defense_and_shared_settings_every_cell():
    assert variants(["training.mrpd.epochs=3"]) == ("training.epochs=3", "")
    assert variants(["training.mrpd.epochs=3"], defense="none") == ("", "")
    # prompt-at trains with MRPD's section: MRPD's budget labels its cells, its own unused section does not
    assert variants(["training.mrpd.epochs=3"], defense="prompt-at", training_section="mrpd") == ("training.epochs=3", "")
    assert variants(["training.prompt-at.epochs=3"], defense="prompt-at", training_section="mrpd") == ("", "")
    assert variants(["training.default.epochs=3"], defense="none") == ("training.default.epochs=3", "")
    assert variants(["dataset.num_points=512"], defense="sor", attack="clean") == ("dataset.num_points=512", "")


def test_eot_matters_for_adaptive_cells_only():
    assert variants(["eot=8"], protocol="adaptive") == ("eot=8", "")
    assert variants(["eot=8"]) == ("", "")


def test_labels():
    assert label("mrpd", "") == "mrpd" and label("mrpd", "epochs=50") == "mrpd [epochs=50]"
    assert label("pgd", float("nan")) == "pgd"
