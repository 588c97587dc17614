"""MRPD: gate, losses, weighting, what trains, the teacher-feature cache, end to end."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from benchmark.core.config import TrainConfig, to_jsonable
from benchmark.core.data import load_dataset
from defenses import DefenseContext, build_defense
from defenses.mrpd.losses import confidence_gate, gated_infonce, label_infonce, uncertainty_weighting
from defenses.mrpd.prompts import MRPDPrompts
from models.clip import DEFAULT_PROMPT_TEMPLATE
from models.zoo import Zoo, ZooContext

CLASSES = ["chair", "table", "cup", "lamp"]
TINY_CLIP = {"image_size": 32, "embed_dim": 32, "vision_width": 64, "vision_layers": 1, "patch_size": 8,
             "text_width": 64, "text_layers": 1, "text_heads": 2}
TINY_PT = {"width": 32, "depth": 1, "num_heads": 2, "num_groups": 8, "group_size": 8, "encoder_hidden": (16, 32, 64)}


# --------------------------------------------------------------------------- losses


def test_gate_passes_exactly_the_samples_whose_label_is_in_the_teachers_top_k():
    bank = torch.eye(4)  # class c embedding = e_c
    teacher = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0.9, 0], [0, 0.2, 0, 1.0], [0.5, 0.6, 0, 0]])
    labels = torch.tensor([0, 2, 3, 0])
    assert confidence_gate(teacher, bank, labels, k=1).tolist() == [True, False, True, False]
    assert confidence_gate(teacher, bank, labels, k=2).tolist() == [True, True, True, True]
    # the released code's rule: top-1 over the batch's label embeddings, compared with the class id
    labels = torch.tensor([2, 0, 1, 3])
    teacher = bank[[1, 0, 1, 3]]
    assert confidence_gate(teacher, bank, labels).tolist() == [False, True, True, True]
    # (a bug: batch positions are compared with class ids, PROTOCOL.md section 5)
    assert confidence_gate(teacher, bank[labels], labels, bank_kind="batch").tolist() == [True, False, False, True]


def test_a_batch_where_no_sample_passes_gives_zero_loss_with_defined_gradients():
    student = torch.randn(5, 8, requires_grad=True)
    log_tau = torch.tensor(-2.0, requires_grad=True)
    loss = gated_infonce(student, torch.randn(5, 8), torch.zeros(5, dtype=torch.bool), log_tau)
    loss.backward()
    assert float(loss) == 0.0
    assert torch.equal(student.grad, torch.zeros_like(student)) and float(log_tau.grad) == 0.0
    text = torch.randn(3, 8, requires_grad=True)
    zero = label_infonce(student, text, torch.tensor([0, 1, 2, 0, 1]), log_tau, torch.zeros(5, dtype=torch.bool))
    assert float(zero) == 0.0


def test_infonce_is_low_when_student_matches_teacher():
    z = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    log_tau = torch.tensor(-3.0)
    gate = torch.ones(6, dtype=torch.bool)
    assert float(gated_infonce(z, z, gate, log_tau)) < float(gated_infonce(z, torch.randn(6, 16), gate, log_tau))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    text = torch.eye(3, 16)
    aligned = text[labels] + 0.01 * torch.randn(6, 16)
    assert float(label_infonce(aligned, text, labels, log_tau)) < float(label_infonce(-aligned, text, labels, log_tau))


def test_uncertainty_weighting_clamps_and_has_the_right_gradient_signs():
    s = torch.tensor([-3.0, 0.0, 2.0], requires_grad=True)
    losses = [torch.tensor(1.0), torch.tensor(5.0), torch.tensor(0.1)]
    total = uncertainty_weighting(losses, s, minimum=-1.0)
    expected = sum(torch.exp(-v) * l + v for v, l in zip(torch.tensor([-1.0, 0.0, 2.0]), losses))
    assert float(total) == pytest.approx(float(expected))
    total.backward()
    assert float(s.grad[0]) == 0.0  # clamped: no gradient below the minimum
    assert float(s.grad[1]) < 0  # large loss: the variance grows (weight falls)
    assert float(s.grad[2]) > 0  # small loss: the variance shrinks (weight rises)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cache = tmp_path_factory.mktemp("mrpd-cache")
    opts = {"train_size": 48, "test_size": 12, "classes": CLASSES}
    data = {s: load_dataset("synthshapes", s, num_points=128, options=opts) for s in ("train", "test")}
    zoo = Zoo(ZooContext(
        train=data["train"], test=data["test"], cache_dir=cache, seed=0,
        params={"clip": dict(TINY_CLIP), "point-transformer-student": dict(TINY_PT),
                "point-transformer-teacher": dict(TINY_PT)},
        train_config=lambda name: TrainConfig(epochs=1, batch_size=8, val_fraction=0.25),
        progress=False, log=lambda m: None))
    student = zoo.get("point-transformer-student")
    return data, zoo, student, cache


def ctx_of(setup, **kw) -> DefenseContext:
    data, zoo, student, cache = setup
    defaults = dict(victim=student.model, train=data["train"], cache_dir=cache, victim_hash=student.weights_hash,
                    zoo=zoo, progress=False, log=lambda m: None,
                    train_config=lambda name: TrainConfig(epochs=2, batch_size=8, val_fraction=0.25, lr=1e-2,
                                                          scale_low=1.0, scale_high=1.0),
                    attack_params={"pgd": {"steps": 2}})
    defaults.update(kw)
    return DefenseContext(**defaults)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def initial_prompts(setup, point_prompts: int = 10, text_prompts: int = 3, seed: int = 0) -> MRPDPrompts:
    """What MRPD starts from (its prompts are seeded from the context's seed, 0 here)."""
    _, zoo, student, _ = setup
    return MRPDPrompts(int(student.model.encoder.width), zoo.get("clip").model, list(student.model.class_names),
                       point_prompts=point_prompts, text_prompts=text_prompts, template=DEFAULT_PROMPT_TEMPLATE,
                       seed=seed)


@contextlib.contextmanager
def counting_calls(module: torch.nn.Module, method: str, counts: dict[str, int], key: str) -> Iterator[None]:
    """Count the calls of ``module.<method>`` (this instance only) into ``counts[key]``."""
    original = getattr(module, method)

    def counted(*args, **kwargs):
        counts[key] += 1
        return original(*args, **kwargs)

    module.__dict__[method] = counted  # shadows the class's method on this instance
    try:
        yield
    finally:
        del module.__dict__[method]


def test_only_prompts_context_temperatures_and_variances_train(setup, tmp_path):
    data, zoo, student, _ = setup
    frozen = {name: snapshot(zoo.get(name).model) for name in ("point-transformer-student", "clip",
                                                               "point-transformer-teacher")}
    # one full-batch step an epoch (36 training clouds) at a high lr: each epoch's loss is the objective
    # on the same clouds, so the history shows it fall (4 clean epochs, then 4 on the PGD clouds)
    epochs = 8
    cfg = TrainConfig(epochs=epochs, batch_size=36, val_fraction=0.25, lr=0.1, scale_low=1.0, scale_high=1.0)
    model = build_defense("mrpd")(ctx_of(setup, cache_dir=tmp_path, train_config=lambda name: cfg))
    for name, before in frozen.items():
        after = zoo.get(name).model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{name} changed"
    meta = model.meta
    width, text_width = student.model.encoder.width, zoo.get("clip").model.text_width
    assert meta["trainable_parameters"] == 10 * width + 3 * text_width + 3 + 3
    assert not any(p.requires_grad for p in student.model.parameters())
    logits = model(torch.from_numpy(data["test"].points[:4]))
    assert logits.shape == (4, len(CLASSES))
    assert set(meta["diagnostics"]["teacher_accuracy"]) == {"image/clean", "image/adv", "point/clean"}

    # the prompts moved away from their seeded initialisation, and the defended model uses them
    init = initial_prompts(setup)
    classifier = model.classifier
    assert classifier.prompts.shape == init.tokens().shape == (10, width)
    assert float((classifier.prompts - init.tokens().detach()).abs().max()) > 1e-2  # point prompts
    with torch.no_grad():
        init_text = init.text(normalize=True)
    assert classifier.class_embeddings.shape == init_text.shape
    assert float((classifier.class_embeddings - init_text).abs().max()) > 1e-3  # text context

    # the training loss falls, in the clean and in the adversarial half
    history = meta["history"]
    assert len(history) == epochs and [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert {"gate/image", "gate/point", "log_var", "tau", "loss", "loss/image", "loss/point",
            "loss/text"} <= set(history[-1])
    half = meta["clean_epochs"]
    assert half == epochs // 2
    loss = [h["loss"] for h in history]
    assert all(math.isfinite(v) for v in loss)
    assert loss[half - 1] < loss[0] - 0.5, loss
    assert loss[-1] < loss[half] - 0.05, loss
    assert loss[-1] < 0.85 * loss[0], loss
    assert history[half - 1]["loss/text"] < history[0]["loss/text"] - 0.1  # the text term itself falls
    # temperatures and variances trained too (they start at 0.07 and 0)
    assert any(abs(t - 0.07) > 1e-3 for t in history[-1]["tau"])
    assert any(abs(v) > 1e-2 for v in history[-1]["log_var"])
    # convergence evidence per epoch: distance of the prompts from their start, gradient norms per group
    assert {"drift/point", "drift/text", "grad/point", "grad/text", "grad/tau", "grad/log_var", "score"} <= set(history[-1])
    assert history[-1]["drift/point"] > history[0]["drift/point"] > 0 and history[-1]["grad/point"] > 0
    # rescue rates on the adversarial training clouds, next to the undefended student's accuracy there
    diag = meta["diagnostics"]
    assert 0 <= diag["student_adv_accuracy"] <= 1 and set(diag["rescue_rate"]) == set(diag["teacher_accuracy"])


def test_fitted_text_context_selection_rule_and_early_stop(setup, tmp_path):
    data, zoo, student, _ = setup
    cfg = TrainConfig(epochs=6, batch_size=36, val_fraction=0.25, lr=0.1, scale_low=1.0, scale_high=1.0)
    ctx = ctx_of(setup, cache_dir=tmp_path, train_config=lambda name: cfg)
    meta = build_defense("mrpd", text_init="fitted", patience=1, clean_tolerance=0.0)(ctx).meta
    fitted = meta["text_init"]
    assert fitted["val_clean_after"] >= fitted["val_clean_before"] and fitted["steps"] == 100
    history, ref = meta["history"], meta["reference_val_clean"]
    assert 0 <= ref <= 1
    # the kept epoch is the best-scoring one; an epoch below the student's clean accuracy scores below every other
    scores = [h["score"] for h in history]
    assert meta["best_epoch"] == int(np.argmax(scores))
    for h in history:
        assert (h["score"] < 0) == (h["val_clean"] < ref - 1e-9)
    # patience 1: training stops at the first epoch that fails to improve
    assert meta["epochs_run"] == len(history) <= 6
    if meta["stopped_early"] is not None:  # never before the first adversarial epoch
        assert meta["stopped_early"] == len(history) - 1 >= meta["clean_epochs"]
    # the paper's defaults: every epoch, no fitted context
    assert build_defense("mrpd").text_init == "random" and build_defense("mrpd").patience is None


def test_teacher_features_are_cached_and_invalidated_by_new_teacher_weights(setup, tmp_path, monkeypatch):
    import defenses.mrpd.teachers as mrpd_module

    lookups: list[bool] = []  # hit or miss of every feature lookup MRPD makes
    real = mrpd_module.cached_features

    def counted(*args, **kwargs):
        features, hit = real(*args, **kwargs)
        lookups.append(hit)
        return features, hit

    monkeypatch.setattr(mrpd_module, "cached_features", counted)
    build_defense("mrpd")(ctx_of(setup, cache_dir=tmp_path))
    # a second training (different epochs: not the trained-state cache) reads every feature from the cache
    lookups.clear()
    build_defense("mrpd", epochs=3)(ctx_of(setup, cache_dir=tmp_path))
    assert lookups == [True] * 4  # image clean / adversarial, point clean, student adversarial
    data, zoo, student, _ = setup
    other = Zoo(dataclasses.replace(zoo.ctx, seed=1, cache_dir=tmp_path))
    lookups.clear()
    build_defense("mrpd", epochs=3)(ctx_of(setup, cache_dir=tmp_path, zoo=other))
    assert lookups.count(False) == 3  # new CLIP and point teacher weights


def test_switches_teachers_gate_weighting_and_prompt_sizes(setup, tmp_path):
    _, zoo, student, _ = setup
    width, text_width = student.model.encoder.width, zoo.get("clip").model.text_width
    ctx = ctx_of(setup, cache_dir=None)  # no feature cache: every teacher that is used runs
    clip_model, point_model = zoo.get("clip").model, zoo.get("point-transformer-teacher").model  # trained now
    calls = {"image": 0, "point": 0}
    with counting_calls(clip_model, "encode_image", calls, "image"), \
            counting_calls(point_model, "embed", calls, "point"):
        # teachers=["text"]: neither the image nor the point teacher runs
        text_only = build_defense("mrpd", teachers=["text"], point_prompts=5, text_prompts=0, weighting="fixed",
                                  fixed_weights=[1.0, 1.0, 2.0], gate=False)(ctx)
        assert calls == {"image": 0, "point": 0}
        image_text = build_defense("mrpd", teachers=["image", "text"], point_prompts=0, gate_bank="batch",
                                   adv_epochs=0)(ctx)
        assert calls["image"] > 0 and calls["point"] == 0
        calls["image"] = 0
        gated = build_defense("mrpd")(ctx)  # the paper: all three teachers, gate on, dynamic weights
        assert calls["image"] > 0 and calls["point"] > 0
        ungated = build_defense("mrpd", gate=False)(ctx)

    # teachers: only the text loss is computed
    meta = text_only.meta
    assert meta["diagnostics"]["teacher_accuracy"] == {}
    for h in meta["history"]:
        assert not {"gate/image", "gate/point", "loss/image", "loss/point"} & set(h)
        # weighting=fixed: the loss is the fixed-weighted text loss; the variances get no gradient
        assert h["loss"] == pytest.approx(2.0 * h["loss/text"], abs=2e-3)
        assert h["log_var"] == [0.0, 0.0, 0.0]
        assert h["tau"][:2] == pytest.approx([0.07, 0.07], abs=1e-4)  # unused temperatures stay
    # prompt sizes: 5 point prompts, no text context (the class embeddings are the plain prompts')
    assert meta["trainable_parameters"] == 5 * width + 6
    assert text_only.classifier.prompts.shape == (5, width)
    with torch.no_grad():
        plain = initial_prompts(setup, point_prompts=5, text_prompts=0).text(normalize=True)
    torch.testing.assert_close(text_only.classifier.class_embeddings, plain, atol=1e-5, rtol=0)
    # no point prompts; adv_epochs=0: every epoch clean, no adversarial features or crafting
    meta = image_text.meta
    assert meta["trainable_parameters"] == 3 * text_width + 6 and image_text.classifier.prompts is None
    assert meta["clean_epochs"] == 2 and meta["victim_attack_success"] is None
    assert set(meta["diagnostics"]["teacher_accuracy"]) == {"image/clean"}
    assert all({"gate/image", "loss/image", "loss/text"} <= set(h) and "loss/point" not in h for h in meta["history"])

    # gate: on, the teachers count only on part of each batch; off, on every sample -> other losses
    on, off = gated.meta["history"], ungated.meta["history"]
    assert all(h["gate/image"] == 1.0 and h["gate/point"] == 1.0 for h in off)
    assert any(h["gate/image"] < 1.0 for h in on) and any(h["gate/point"] < 1.0 for h in on)
    for key in ("loss/image", "loss/point", "loss/text", "loss"):
        assert abs(on[0][key] - off[0][key]) > 1e-2, key
    # weighting=dynamic: the variances train
    assert any(abs(v) > 1e-4 for v in on[-1]["log_var"])

    with pytest.raises(ValueError, match="teachers"):
        build_defense("mrpd", teachers=["audio"])
    with pytest.raises(ValueError, match="nothing to learn"):
        build_defense("mrpd", point_prompts=0, text_prompts=0)


def test_mrpd_on_a_victim_without_prompts_is_a_clear_error(setup):
    data, zoo, _, _ = setup
    victim = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
    with pytest.raises(ValueError, match="clip-space"):
        build_defense("mrpd")(ctx_of(setup, victim=victim))


def test_smoke_bench_run_mrpd_end_to_end(tmp_path):
    env = {**os.environ, "PCRB_CACHE_DIR": str(tmp_path / "cache"), "PCRB_NO_TUNE": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmark", "run", "--profile", "smoke", "--defense", "mrpd",
                           "--attack", "pgd", "--out", str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mrpd" in proc.stdout and "none" in proc.stdout
    print(f"smoke mrpd run: {time.perf_counter() - start:.1f} s")
    out = tmp_path / "out"
    (record_path,) = sorted((out / "runs").glob("*.json"))
    record = json.loads(record_path.read_text())
    assert record["finished"] and record["failures"] == []
    # the results table: ok rows for none and mrpd, on clean clouds and under pgd
    (table_path,) = sorted(out.glob("*.csv"))
    with table_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    cells = {(r["defense"], r["attack"]): r for r in rows}
    assert len(cells) == len(rows) and set(cells) == {(d, a) for d in ("none", "mrpd") for a in ("clean", "pgd")}
    for (defense, attack), r in cells.items():
        assert r["status"] == "ok" and not r["error"], (defense, attack, r["error"])
        assert r["run_id"] == record["run_id"] and int(r["n"]) == record["n"] == 16  # smoke: limit 16
        accuracy = float(r["accuracy"])
        assert 0.0 <= accuracy <= 1.0 and accuracy == pytest.approx(int(r["correct"]) / int(r["n"]))
        if attack == "pgd":
            assert 0.0 <= float(r["attack_success"]) <= 1.0
    # the MRPD rows carry MRPD's parameters (the smoke profile's), the undefended rows none
    expected = to_jsonable(build_defense("mrpd", **record["config"]["defenses"]["mrpd"]).params())
    for attack in ("clean", "pgd"):
        params = json.loads(cells["mrpd", attack]["defense_params"])
        assert params == expected
        assert params["teachers"] == ["image", "point", "text"] and params["point_prompts"] == 10
        assert params["steps"] == 2  # smoke.yaml: defenses.mrpd.steps
        assert json.loads(cells["none", attack]["defense_params"]) == {}
    # the run record holds MRPD's training meta, one history entry per epoch
    mrpd = record["defenses"]["mrpd"]
    assert mrpd["error"] is None
    meta = mrpd["meta"]
    epochs = record["config"]["training"]["mrpd"]["epochs"]
    assert meta["epochs"] == epochs == 2 and meta["clean_epochs"] == 1 and not meta["cached"]
    assert meta["trainable_parameters"] > 0
    history = meta["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    for h in history:
        assert math.isfinite(h["loss"]) and len(h["tau"]) == 3 and len(h["log_var"]) == 3
        assert 0.0 <= h["gate/image"] <= 1.0 and 0.0 <= h["gate/point"] <= 1.0
        assert 0.0 <= h["val_clean"] <= 1.0 and 0.0 <= h["val_adv"] <= 1.0
    assert "meta" not in record["defenses"]["none"] or "history" not in (record["defenses"]["none"]["meta"] or {})
    # bench ablate on the same cache: the full method is the run's trained MRPD, one variant trains
    proc = subprocess.run([sys.executable, "-m", "benchmark", "ablate", "mrpd", "--profile", "smoke", "--variants",
                           "no-gate", "--attack", "pgd", "--out", str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "out" / "ablations" / "mrpd" / "ablation.md").read_text()
    assert "| full |" in table and "| no-gate |" in table and "| none |" in table
    assert "mrpd: loaded cached training" in proc.stderr  # the full variant = the run's MRPD
    # bench teachers on the same cache: MRPD and the pgd examples are reused, one row per (set, probe)
    proc = subprocess.run([sys.executable, "-m", "benchmark", "teachers", "--profile", "smoke", "--attack", "pgd",
                           "--views", "2", "--train-limit", "8", "--out", str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mrpd: loaded cached training" in proc.stderr
    report = json.loads((tmp_path / "out" / "diagnostics" / "mrpd" / "teachers.json").read_text())
    probes = ["student", "student+mrpd", "image-1v", "image-2v", "point-teacher"]
    sets = ["test: clean", "test: pgd", "train: clean", "train: mrpd examples"]
    assert [(r["set"], r["probe"]) for r in report["rows"]] == [(s, p) for s in sets for p in probes]
    by = {(r["set"], r["probe"]): r for r in report["rows"]}
    assert by["test: clean", "student"]["accuracy"] == pytest.approx(float(cells["none", "clean"]["accuracy"]))
    assert by["test: pgd", "student"]["accuracy"] == pytest.approx(float(cells["none", "pgd"]["accuracy"]))
    assert by["test: pgd", "student+mrpd"]["accuracy"] == pytest.approx(float(cells["mrpd", "pgd"]["accuracy"]))
    assert by["train: mrpd examples", "student"]["n"] == 8 and by["test: pgd", "image-2v"]["drift"] <= 1.0 + 1e-6
    assert "Rescue rate" in (tmp_path / "out" / "diagnostics" / "mrpd" / "teachers.md").read_text()


# --------------------------------------------------------------------------- prompt-at, the matched control


def test_prompt_at_is_mrpd_without_teachers_trained_with_mrpds_settings(setup, tmp_path):
    from defenses.mrpd import PromptAT

    _, zoo, student, _ = setup
    sections: list[str] = []
    cfg = TrainConfig(epochs=2, batch_size=8, val_fraction=0.25, lr=1e-2, scale_low=1.0, scale_high=1.0)

    def train_config(name: str) -> TrainConfig:
        sections.append(name)
        return cfg

    clip_model, point_model = zoo.get("clip").model, zoo.get("point-transformer-teacher").model
    calls = {"image": 0, "point": 0}
    with counting_calls(clip_model, "encode_image", calls, "image"), \
            counting_calls(point_model, "embed", calls, "point"):
        control = build_defense("prompt-at", text_init="fitted")(ctx_of(setup, cache_dir=tmp_path,
                                                                         train_config=train_config))
    assert calls == {"image": 0, "point": 0} and set(sections) == {"mrpd"}
    assert control.defense_name == "prompt-at" and not control.meta["cached"]
    assert len(list((tmp_path / "defenses").glob("prompt-at-*.safetensors"))) == 1
    assert not list((tmp_path / "defenses").glob("mrpd-*.safetensors"))
    width, text_width = student.model.encoder.width, zoo.get("clip").model.text_width
    assert control.meta["trainable_parameters"] == 10 * width + 3 * text_width + 3 + 3  # exactly MRPD's
    assert {"loss/text", "drift/point", "drift/text"} <= set(control.meta["history"][-1])
    assert not any(k.startswith(("loss/image", "loss/point")) for k in control.meta["history"][-1])
    # every switch but the teachers is MRPD's, with MRPD's defaults
    mine, theirs = PromptAT().params(), build_defense("mrpd").params()
    assert {k: v for k, v in mine.items() if k != "teachers"} == {k: v for k, v in theirs.items() if k != "teachers"}
    assert mine["teachers"] == ["text"]
    with pytest.raises(ValueError, match="teachers is fixed"):
        PromptAT(teachers=["image", "text"])


@pytest.mark.parametrize("profile", ["default", "paper", "smoke"])
def test_profiles_keep_prompt_at_matched_to_mrpd(profile):
    from benchmark.core.config import resolve_config

    cfg = resolve_config(profile)
    mrpd = dict(cfg.defenses.get("mrpd") or {})
    mrpd.pop("teachers", None)
    assert dict(cfg.defenses.get("prompt-at") or {}) == mrpd


def test_adv_mix_draws_that_share_of_each_adversarial_batch(setup, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=4, val_fraction=0.25, lr=1e-2, scale_low=1.0, scale_high=1.0)
    ctx = ctx_of(setup, cache_dir=tmp_path, train_config=lambda name: cfg)
    history = build_defense("mrpd", adv_mix=0.5)(ctx).meta["history"]
    assert "adv_share" not in history[0]  # the clean epoch
    assert 0.2 < history[1]["adv_share"] < 0.8  # 9 batches of 4: about half adversarial
    full = build_defense("mrpd")(ctx_of(setup, cache_dir=tmp_path, train_config=lambda name: cfg)).meta["history"]
    assert full[1]["adv_share"] == 1.0
    assert build_defense("mrpd").adv_mix == 1.0  # the paper: adversarial clouds only


@pytest.mark.parametrize(("patience", "scope", "expected"), [(6, "phase", 26), (6, "run", 21), (None, "phase", 21),
                                                             (30, "phase", 40), (6, "phase", 0)])
def test_early_stop_gives_the_adversarial_phase_patience_epochs(patience, scope, expected):
    """40 epochs, the last 20 adversarial: with ``patience_scope="phase"`` a best epoch in the clean
    half cannot end the run before ``patience`` adversarial epochs have run (``"run"``: one)."""
    from types import SimpleNamespace

    from defenses.mrpd.training import PromptTraining

    training = PromptTraining.__new__(PromptTraining)
    training.switches = SimpleNamespace(patience=patience, patience_scope=scope)
    training.clean_epochs = 20
    adv_epochs = 0 if expected == 0 else 20
    assert training._min_epochs(adv_epochs) == expected
    with pytest.raises(ValueError, match="patience_scope"):
        build_defense("mrpd", patience_scope="best")
