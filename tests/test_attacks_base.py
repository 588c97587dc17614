"""Specification of the attack bookkeeping: losses, constraints, targets, validation, results."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import Attack, AttackResult, draw_targets, runner_up_targets
from attacks.constraints import clip_l2, clip_linf, clip_per_point, project_to_surface
from attacks.losses import adversarial_loss

C = 5


class TinyPointNet(nn.Module):
    """Shared MLP + max pool + linear head, BatchNorm and dropout so train/eval matters."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mlp = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 64))
        self.bn = nn.BatchNorm1d(64)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(64, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.bn(self.mlp(x).amax(dim=1))))


def clouds(b: int = 8, n: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    return x / x.norm(dim=-1).amax(dim=1)[:, None, None]


@dataclass
class Shift(Attack):
    """Test attack: moves every point by +shift along x and reports 3 iterations."""

    shift: float = 0.0
    targeted: bool = False
    seed: int = 0

    def attack(self, model, points, labels, targets, *, indices):
        # Uses the model with gradients, as a real attack would.
        x = points.clone().requires_grad_(True)
        model(x).sum().backward()
        out = points.clone()
        out[..., 0] += self.shift
        return out, torch.full((points.shape[0],), 3, dtype=torch.long)


@pytest.fixture
def model() -> TinyPointNet:
    return TinyPointNet()


# --------------------------------------------------------------------------- losses


LOGITS = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, -1.0]])
LABELS = torch.tensor([0, 1])
TARGETS = torch.tensor([2, 0])


def test_targeted_ce_is_cross_entropy_towards_target():
    expected = -torch.log_softmax(LOGITS, 1)[torch.arange(2), TARGETS]
    torch.testing.assert_close(adversarial_loss(LOGITS, LABELS, TARGETS, "ce"), expected)


def test_untargeted_ce_is_negative_cross_entropy_of_label():
    expected = torch.log_softmax(LOGITS, 1)[torch.arange(2), LABELS]
    torch.testing.assert_close(adversarial_loss(LOGITS, LABELS, None, "ce"), expected)


def test_targeted_margin_matches_hand_computation():
    # sample 0: max_{j!=2} = 2.0, z_t = 0.5 -> 1.5; sample 1: max_{j!=0} = 3.0, z_t = 0 -> 3.0
    torch.testing.assert_close(adversarial_loss(LOGITS, LABELS, TARGETS, "margin"), torch.tensor([1.5, 3.0]))
    torch.testing.assert_close(
        adversarial_loss(LOGITS, LABELS, TARGETS, "margin", kappa=1.0), torch.tensor([2.5, 4.0])
    )


def test_targeted_margin_is_zero_once_target_wins_by_kappa():
    logits = torch.tensor([[0.0, 0.0, 5.0]])
    assert adversarial_loss(logits, torch.tensor([0]), torch.tensor([2]), "margin", kappa=4.0).item() == 0.0
    assert adversarial_loss(logits, torch.tensor([0]), torch.tensor([2]), "margin", kappa=6.0).item() == 1.0


def test_untargeted_margin_matches_hand_computation():
    # sample 0: z_y=2, max other=1 -> 1; sample 1: z_y=3, max other=0 -> 3
    torch.testing.assert_close(adversarial_loss(LOGITS, LABELS, None, "margin"), torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(
        adversarial_loss(LOGITS, LABELS, None, "margin", kappa=0.5), torch.tensor([1.5, 3.5])
    )
    fooled = torch.tensor([[0.0, 2.0, 0.0]])
    assert adversarial_loss(fooled, torch.tensor([0]), None, "margin", kappa=1.0).item() == 0.0


def test_unknown_loss_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown adversarial loss"):
        adversarial_loss(LOGITS, LABELS, None, "hinge")


# --------------------------------------------------------------------------- constraints


def test_clip_l2_bounds_the_global_norm_and_keeps_direction():
    delta = torch.randn(4, 50, 3)
    out = clip_l2(delta, 0.5)
    assert torch.all(out.flatten(1).norm(dim=1) <= 0.5 + 1e-6)
    torch.testing.assert_close(out.flatten(1).norm(dim=1), torch.full((4,), 0.5))
    cos = F.cosine_similarity(out.flatten(1), delta.flatten(1), dim=1)
    torch.testing.assert_close(cos, torch.ones(4))


def test_clip_l2_leaves_a_delta_inside_the_ball_unchanged():
    delta = torch.randn(3, 20, 3)
    delta = delta / delta.flatten(1).norm(dim=1)[:, None, None] * 0.3
    assert torch.equal(clip_l2(delta, 0.5), delta)


def test_clip_l2_accepts_per_sample_budgets():
    delta = torch.ones(2, 10, 3)
    out = clip_l2(delta, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(out.flatten(1).norm(dim=1), torch.tensor([1.0, 2.0]))


def test_clip_per_point_bounds_each_point_norm():
    delta = torch.randn(2, 30, 3)
    out = clip_per_point(delta, 0.1)
    norms = out.norm(dim=-1)
    assert torch.all(norms <= 0.1 + 1e-6)
    small = delta.norm(dim=-1) <= 0.1
    assert torch.equal(out[small], delta[small])


def test_clip_linf_clamps_each_coordinate():
    delta = torch.tensor([[[0.5, -0.5, 0.05]]])
    assert torch.equal(clip_linf(delta, 0.1), torch.tensor([[[0.1, -0.1, 0.05]]]))


def test_surface_projection_removes_inward_motion():
    normals = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    delta = torch.tensor([[[0.0, 0.0, -0.2], [0.1, 0.2, 0.0], [0.0, 0.1, 0.3], [0.1, 0.0, -0.4]]])
    out = project_to_surface(delta, normals)
    assert torch.equal(out[0, 0], torch.zeros(3))  # anti-parallel -> zero
    assert torch.equal(out[0, 1], delta[0, 1])  # tangential unchanged
    assert torch.equal(out[0, 2], delta[0, 2])  # outward unchanged
    assert torch.equal(out[0, 3], torch.tensor([0.1, 0.0, 0.0]))  # inward part dropped


# --------------------------------------------------------------------------- targets


def test_drawn_targets_never_equal_labels():
    labels = torch.arange(200) % C
    targets = draw_targets(labels, C, seed=0)
    assert not torch.any(targets == labels)
    assert targets.min() >= 0 and targets.max() < C
    assert set(targets.tolist()) == set(range(C))


def test_drawn_targets_are_deterministic_per_seed_and_index():
    labels = torch.arange(50) % C
    a = draw_targets(labels, C, seed=3)
    assert torch.equal(a, draw_targets(labels, C, seed=3))
    assert not torch.equal(a, draw_targets(labels, C, seed=4))


def test_drawn_targets_do_not_depend_on_batch_composition():
    labels = torch.arange(40) % C
    full = draw_targets(labels, C, seed=7)
    idx = torch.tensor([31, 2, 17])
    assert torch.equal(draw_targets(labels[idx], C, seed=7, indices=idx), full[idx])


def test_runner_up_targets_are_the_best_class_other_than_the_label():
    logits = torch.tensor([[5.0, 3.0, 4.0], [1.0, 2.0, 0.0], [0.0, 0.0, 9.0]])
    labels = torch.tensor([0, 1, 0])  # the third cloud is misclassified: its runner-up is the prediction
    assert runner_up_targets(logits, labels).tolist() == [2, 0, 2]


@pytest.mark.parametrize("name", ["cw", "knn", "add-cd", "advpc", "apgd", "fmn"])
def test_the_runner_up_rule_targets_the_models_second_class_on_the_clean_cloud(model, name):
    from attacks import ATTACKS

    attack = ATTACKS.build(name, target_rule="runner-up", **({"targeted": True} if name in ("apgd", "fmn") else {}))
    if name == "advpc":
        attack.with_autoencoder(nn.Identity())
    x, labels = clouds(4, 32), torch.tensor([0, 1, 2, 3])
    model.eval()
    with torch.no_grad():
        expected = runner_up_targets(model(x), labels)
    assert torch.equal(_targets_seen(attack, model, x, labels), expected)


def _targets_seen(attack: Attack, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The targets ``attack`` hands its algorithm (the algorithm itself is not run)."""
    seen = {}

    def record(model, points, labels, targets, *, indices):
        seen["targets"] = targets
        return points, torch.zeros(points.shape[0], dtype=torch.long)

    attack.attack = record  # type: ignore[method-assign]
    attack(model, x, labels)
    return seen["targets"]


def test_an_unknown_target_rule_is_rejected_naming_the_choices():
    from attacks import ATTACKS

    with pytest.raises(ValueError, match="runner-up"):
        ATTACKS.build("cw", target_rule="hardest")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("points", "labels", "match"),
    [
        (torch.full((2, 8, 3), float("nan")), torch.zeros(2, dtype=torch.long), "NaN or inf"),
        (torch.full((2, 8, 3), float("inf")), torch.zeros(2, dtype=torch.long), "NaN or inf"),
        (torch.zeros(2, 8, 2), torch.zeros(2, dtype=torch.long), r"\[B, N, 3\]"),
        (torch.zeros(8, 3), torch.zeros(8, dtype=torch.long), r"\[B, N, 3\]"),
        (torch.zeros(0, 8, 3), torch.zeros(0, dtype=torch.long), "empty batch"),
        (torch.zeros(2, 8, 3), torch.tensor([0, C]), r"\[0, C\)"),
        (torch.zeros(2, 8, 3), torch.tensor([-1, 0]), r"\[0, C\)"),
        (torch.zeros(2, 8, 3), torch.zeros(2, dtype=torch.int32), "int64"),
        (torch.zeros(2, 8, 3), torch.zeros(3, dtype=torch.long), "shape"),
    ],
)
def test_invalid_inputs_raise_clear_value_errors(model, points, labels, match):
    with pytest.raises(ValueError, match=match):
        Shift()(model, points, labels)


def test_targets_equal_to_labels_are_rejected(model):
    attack = Shift(targeted=True)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="target != label"):
        attack(model, clouds(2, 8), labels, targets=torch.tensor([0, 2]))


def test_untargeted_attack_rejects_targets(model):
    with pytest.raises(ValueError, match="untargeted"):
        Shift()(model, clouds(2, 8), torch.tensor([0, 1]), targets=torch.tensor([1, 2]))


# --------------------------------------------------------------------------- model untouched


def test_attack_leaves_model_parameters_modes_and_grad_flags_unchanged(model):
    model.train()
    model.head.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    Shift(shift=0.1)(model, clouds(), torch.arange(8) % C)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_model_state_is_restored_when_the_attack_raises(model):
    model.train()
    with pytest.raises(ValueError):
        Shift()(model, clouds(2, 8), torch.tensor([0, 9]))
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- results


def test_result_of_an_unchanged_cloud_has_zero_distances(model):
    x = clouds()
    labels = torch.arange(8) % C
    res = Shift(shift=0.0)(model, x, labels)
    assert isinstance(res, AttackResult)
    assert torch.equal(res.chamfer, torch.zeros(8)) and torch.equal(res.hausdorff, torch.zeros(8))
    assert torch.equal(res.l2, torch.zeros(8))
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    assert torch.equal(res.pred, pred)
    assert torch.equal(res.success, pred != labels)
    assert res.target is None and res.iterations.dtype == torch.long and res.seconds >= 0


def test_result_distances_of_a_shift(model):
    res = Shift(shift=0.01)(model, clouds(4, 32), torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(res.l2, torch.full((4,), 0.01 * 32**0.5))
    assert torch.all(res.chamfer <= 1e-4 + 1e-9) and torch.all(res.hausdorff <= 1e-4 + 1e-9)
    assert torch.all(res.chamfer > 0)


def test_targeted_attack_draws_targets_and_succeeds_only_on_target(model):
    labels = torch.arange(8) % C
    res = Shift(targeted=True, seed=5)(model, clouds(), labels)
    assert torch.equal(res.target, draw_targets(labels, C, 5))
    assert torch.equal(res.success, res.pred == res.target)
