"""MRPD: gate, losses, weighting, what trains, the teacher-feature cache, end to end."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest
import torch

from benchmark.cache import FEATURE_CACHE_STATS
from benchmark.config import TrainConfig
from benchmark.data import load_dataset
from defenses import DefenseContext, build_defense
from defenses.mrpd.losses import confidence_gate, gated_infonce, label_infonce, uncertainty_weighting
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


def test_only_prompts_context_temperatures_and_variances_train(setup, tmp_path):
    data, zoo, student, _ = setup
    frozen = {name: snapshot(zoo.get(name).model) for name in ("point-transformer-student", "clip",
                                                               "point-transformer-teacher")}
    model = build_defense("mrpd")(ctx_of(setup, cache_dir=tmp_path))
    for name, before in frozen.items():
        after = zoo.get(name).model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{name} changed"
    meta = model.meta
    width, text_width = student.model.encoder.width, zoo.get("clip").model.text_width
    assert meta["trainable_parameters"] == 10 * width + 3 * text_width + 3 + 3
    assert not any(p.requires_grad for p in student.model.parameters())
    logits = model(torch.from_numpy(data["test"].points[:4]))
    assert logits.shape == (4, len(CLASSES))
    history = meta["history"]
    assert len(history) == 2 and {"gate/image", "gate/point", "log_var", "tau"} <= set(history[-1])
    assert set(meta["diagnostics"]["teacher_accuracy"]) == {"image/clean", "image/adv", "point/clean"}


def test_teacher_features_are_cached_and_invalidated_by_new_teacher_weights(setup, tmp_path):
    build_defense("mrpd")(ctx_of(setup, cache_dir=tmp_path))
    hits = FEATURE_CACHE_STATS["hits"]
    # a second training (different epochs: not the trained-state cache) reads every feature from the cache
    ctx = ctx_of(setup, cache_dir=tmp_path)
    build_defense("mrpd", epochs=3)(ctx)
    assert FEATURE_CACHE_STATS["hits"] - hits == 3
    data, zoo, student, _ = setup
    other = Zoo(dataclasses.replace(zoo.ctx, seed=1, cache_dir=tmp_path))
    misses = FEATURE_CACHE_STATS["misses"]
    build_defense("mrpd", epochs=3)(ctx_of(setup, cache_dir=tmp_path, zoo=other))
    assert FEATURE_CACHE_STATS["misses"] - misses == 3  # new CLIP and point teacher weights


def test_switches_teachers_gate_weighting_and_prompt_sizes(setup, tmp_path):
    ctx = ctx_of(setup, cache_dir=None)
    model = build_defense("mrpd", teachers=["text"], point_prompts=5, text_prompts=0, weighting="fixed",
                          gate=False)(ctx)
    assert model.meta["trainable_parameters"] == 5 * setup[2].model.encoder.width + 6
    model = build_defense("mrpd", teachers=["image", "text"], gate_bank="batch", adv_epochs=0)(ctx)
    assert model.meta["clean_epochs"] == 2
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
    # bench ablate on the same cache: the full method is the run's trained MRPD, one variant trains
    proc = subprocess.run([sys.executable, "-m", "benchmark", "ablate", "mrpd", "--profile", "smoke", "--variants",
                           "no-gate", "--attack", "pgd", "--out", str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "out" / "ablations" / "mrpd" / "ablation.md").read_text()
    assert "| full |" in table and "| no-gate |" in table and "| none |" in table
    assert "mrpd: loaded cached training" in proc.stderr  # the full variant = the run's MRPD
