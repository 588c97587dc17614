"""MRPD's optimisation loop: distil the teachers into the prompts, then keep the best epoch.

Promises (:func:`train_prompts`, PROTOCOL.md sections 4-5):

1. Schedule: the first ``E - A`` epochs on clean clouds, the last ``A`` (``adv_epochs``;
   default half) on adversarial examples crafted once against the undefended student
   (``defenses.adversarial_training.crafted_training_set``); with ``adv_mix < 1`` each sample
   of an adversarial batch is adversarial with that probability (its own seeded stream).
2. The frozen teachers' embeddings of every training cloud come from the feature cache
   (:mod:`defenses.mrpd.teachers`); a batch runs the student and the small text tower only.
3. Loss per batch: for the image and point teachers, the gated symmetric InfoNCE between the
   student's and the teacher's embeddings (gate: the label among the teacher's top-k over the
   class bank, or the released code's batch bank); the label InfoNCE against the prompted text
   embeddings (gated by any teacher's gate under ``gate_text``); combined by uncertainty
   weighting (``weighting=dynamic``) or fixed weights.
4. Only the prompts train (:meth:`MRPDPrompts.parameters_to_train`); the student is checked
   frozen afterwards.
5. Selection: after each epoch the validation clouds (carved from the training split, never
   the test set) score it by :func:`selection_score`; the learned parameters end at the best
   epoch's, and training stops after ``patience`` epochs without improvement, never before
   ``patience`` adversarial epochs have run (``patience_scope="phase"``; ``"run"``: never
   before the first one).
6. The returned run record holds the schedule, the kept epoch, one history record per epoch
   (validation accuracies, temperatures, log-variances, prompt drift, mean losses, gate rates,
   gradient norms, seconds) and the teachers' diagnostics.

Same inputs, same results: random numbers are drawn in a fixed order (the batch order and
augmentation by ``benchmark.core.training.fit`` from the seed; the adversarial mix from its
own generator seeded ``seed + 7``).
"""
from __future__ import annotations

import time
import warnings
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import Attack
from benchmark.core.config import TrainConfig
from benchmark.core.data import PointCloudDataset
from benchmark.core.projection import DepthProjector
from benchmark.core.training import FitResult, fit, split_indices
from defenses.adversarial_training import crafted_training_set, victim_weights_hash
from defenses.base import DefenseContext
from defenses.mrpd.losses import confidence_gate, gated_infonce, label_infonce, uncertainty_weighting
from defenses.mrpd.prompts import MRPDPrompts, fit_text_context
from defenses.mrpd.teachers import teacher_diagnostics, teacher_features
from models.clip import ClipTeacher

__all__ = ["PromptTraining", "Switches", "rms_change", "selection_score", "train_prompts", "warn_weak_teachers"]


class Switches(Protocol):
    """The MRPD switches the loop reads (an :class:`~defenses.mrpd.defense.MRPD` is one;
    their meaning is documented there)."""

    defense_name: ClassVar[str]
    teachers: list[str]
    gate: bool
    gate_k: int
    gate_bank: str
    gate_text: bool
    weighting: str
    fixed_weights: list[float]
    lambda_min: float
    point_prompts: int
    text_prompts: int
    adv_epochs: int | None
    point_teacher: str
    point_teacher_input: str
    adv_mix: float
    text_init: str
    patience: int | None
    patience_scope: str
    clean_tolerance: float | None


def rms_change(params: list[Tensor], initial: list[Tensor]) -> float:
    """Root-mean-square change of ``params`` from ``initial`` per coordinate (4 significant digits)."""
    change = torch.cat([(p.detach() - p0).flatten() for p, p0 in zip(params, initial)])
    return float(f"{float(change.pow(2).mean().sqrt()):.4g}")


def selection_score(clean: float, robust: float | None, reference: float, clean_tolerance: float | None) -> float:
    """Higher is better: validation robust accuracy (clean if no adversarial clouds), clean
    breaking ties; with ``clean_tolerance``, an epoch whose clean accuracy fell more than the
    tolerance below ``reference`` (the undefended student's) scores below every other."""
    if clean_tolerance is not None and clean < reference - clean_tolerance - 1e-9:
        return -1.0 + clean
    return (clean if robust is None else robust) + 1e-4 * clean


class PromptTraining:
    """One MRPD training run's state: the step ``fit`` calls per batch, the gradient-norm hook
    and the per-epoch validation, sharing the per-epoch tallies and the history.

    Args:
        train_idx: the training rows (positions in ``ctx.train``) that ``train`` holds, in order.
        val: the validation clouds (None: no validation, the last epoch is kept); ``val_idx``
            their positions in ``ctx.train``.
        features: the teachers' embeddings of every cloud of ``ctx.train`` (:func:`teacher_features`).
        adv_points: the crafted adversarial clouds, aligned with ``ctx.train`` (None: no adversarial epochs).
    """

    def __init__(self, switches: Switches, ctx: DefenseContext, student: nn.Module, learned: MRPDPrompts,
                 cfg: TrainConfig, features: dict[str, Tensor], adv_points: Tensor | None, train_idx: np.ndarray,
                 val: PointCloudDataset | None, val_idx: np.ndarray, clean_epochs: int) -> None:
        self.switches, self.ctx, self.student, self.learned, self.cfg = switches, ctx, student, learned, cfg
        self.features, self.adv_points, self.val, self.clean_epochs = features, adv_points, val, clean_epochs
        self.device = ctx.device
        self.rows_of = torch.from_numpy(train_idx).to(self.device)
        self.per_epoch = max(1, len(train_idx) // cfg.batch_size)
        self.calls = 0
        self.tally: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.weights = torch.tensor(switches.fixed_weights, dtype=torch.float32, device=self.device)
        groups = {"point": [] if learned.point is None else [learned.point.tokens], "text": [learned.text.ctx],
                  "tau": [learned.log_tau], "log_var": [learned.log_var]}
        self.groups = {k: [p for p in v if p.numel()] for k, v in groups.items()}
        self.initial = {k: [p.detach().clone() for p in v] for k, v in self.groups.items()}
        self.mixer = torch.Generator().manual_seed(ctx.seed + 7)  # which samples of an adversarial batch are adversarial
        self.val_adv = adv_points[torch.from_numpy(val_idx)] if (adv_points is not None and val is not None) else None
        self.reference = self._reference_accuracy() if val is not None else None
        self.clock = time.perf_counter()

    # ------------------------------------------------------------------ the run
    def run(self, train: PointCloudDataset, params: list[nn.Parameter], adv_epochs: int) -> FitResult:
        """Train ``params`` on ``train`` with ``benchmark.core.training.fit`` (best epoch kept)."""
        s = self.switches
        self.clock = time.perf_counter()  # epoch wall time (training + this validation), per history record
        return fit(self.learned, train, self.cfg, self.step, params=params,
                   validate=self.validate if self.val is not None else None, device=self.device, seed=self.ctx.seed,
                   description=s.defense_name, progress=self.ctx.progress, log=self.ctx.log, patience=s.patience,
                   min_epochs=self._min_epochs(adv_epochs), after_backward=self.after_backward)

    def _min_epochs(self, adv_epochs: int) -> int:
        """Epochs before early stopping may end the run: into the adversarial phase by
        ``patience`` epochs (``patience_scope="phase"``) or by one (``"run"``); 0 without it."""
        if not adv_epochs:
            return 0
        s = self.switches
        into = s.patience if s.patience is not None and s.patience_scope == "phase" else 1
        return self.clean_epochs + min(into, adv_epochs)

    def _add(self, name: str, value: float) -> None:
        self.tally[name] = self.tally.get(name, 0.0) + value

    # ------------------------------------------------------------------ one batch
    def step(self, points: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
        """The objective of one batch (``idx``: positions in the training subset)."""
        epoch = self.calls // self.per_epoch
        self.calls += 1
        rows = self.rows_of[idx.to(self.device)]
        mask = self._adversarial_mask(len(rows)) if epoch >= self.clean_epochs else None
        if mask is not None:
            points = torch.where(mask[:, None, None], self.adv_points[rows.cpu()].to(self.device), points)
            self._add("adv_share", float(mask.float().mean()))
        z = self.student.embed(points, self.learned.tokens())
        text = self.learned.text(normalize=True)
        losses, slots, gates = self._distillation_losses(z, text, labels, rows, mask)
        if "text" in self.switches.teachers:
            losses.append(self._text_loss(z, text, labels, gates))
            slots.append(2)
        self._add("steps", 1.0)
        total = self._objective(losses, slots)
        # per-epoch means in the history: "loss" = the optimised objective, "loss/<teacher>" its terms
        self._add("loss", float(total.detach()))
        return total

    def _adversarial_mask(self, size: int) -> Tensor:
        """``[size]`` bool: the samples of an adversarial batch that take their adversarial example."""
        if self.switches.adv_mix < 1:
            return (torch.rand(size, generator=self.mixer) < self.switches.adv_mix).to(self.device)
        return torch.ones(size, dtype=torch.bool, device=self.device)

    def _teacher_embeddings(self, teacher: str, rows: Tensor, mask: Tensor | None) -> Tensor:
        """The teacher's embeddings of the batch: of the adversarial clouds where the batch holds
        them (the image teacher always; the point teacher when it sees the student's input)."""
        f = self.features[f"{teacher}/clean"][rows]
        if mask is not None and (teacher == "image" or self.switches.point_teacher_input == "student"):
            f = torch.where(mask[:, None], self.features[f"{teacher}/adv"][rows], f)
        return f

    def _gate(self, f: Tensor, text: Tensor, labels: Tensor) -> Tensor:
        """``[B]`` bool: the samples the teacher with embeddings ``f`` counts on."""
        s = self.switches
        if not s.gate:
            return torch.ones_like(labels, dtype=torch.bool)
        if s.gate_bank == "class":  # the paper: label among the top-k of the C classes
            return confidence_gate(f, text.detach(), labels, s.gate_k)
        # the released code: top-k over the batch's label embeddings, compared with the class id
        return confidence_gate(f, text.detach()[labels], labels, s.gate_k, bank_kind="batch")

    def _distillation_losses(self, z: Tensor, text: Tensor, labels: Tensor, rows: Tensor,
                             mask: Tensor | None) -> tuple[list[Tensor], list[int], list[Tensor]]:
        """The image and point teachers' gated InfoNCE terms, their slots and their gates."""
        losses, slots, gates = [], [], []
        for slot, teacher in enumerate(("image", "point")):
            if teacher not in self.switches.teachers:
                continue
            f = self._teacher_embeddings(teacher, rows, mask)
            gate = self._gate(f, text, labels)
            gates.append(gate)
            self._add(f"gate/{teacher}", float(gate.float().mean()))
            losses.append(gated_infonce(z, f, gate, self.learned.log_tau[slot]))
            slots.append(slot)
            self._add(f"loss/{teacher}", float(losses[-1].detach()))
        return losses, slots, gates

    def _text_loss(self, z: Tensor, text: Tensor, labels: Tensor, gates: list[Tensor]) -> Tensor:
        """The label InfoNCE against the prompted class embeddings (only the samples some teacher
        gate passes, under ``gate_text`` with the gate on)."""
        s = self.switches
        text_gate = torch.stack(gates).any(0) if s.gate and s.gate_text and gates else None
        loss = label_infonce(z, text, labels, self.learned.log_tau[2], text_gate)
        self._add("loss/text", float(loss.detach()))
        return loss

    def _objective(self, losses: list[Tensor], slots: list[int]) -> Tensor:
        """The terms combined: uncertainty weighting (``dynamic``) or the fixed weights."""
        if self.switches.weighting == "dynamic":
            return uncertainty_weighting(losses, self.learned.log_var[slots], self.switches.lambda_min)
        return sum(self.weights[s] * loss for s, loss in zip(slots, losses))

    def after_backward(self) -> None:
        """Tally each group's gradient norm before clipping (averaged per epoch in the history)."""
        for name, params_ in self.groups.items():
            grads = [p.grad for p in params_ if p.grad is not None]
            if grads:
                self._add(f"grad/{name}", float(torch.cat([g.flatten() for g in grads]).norm()))

    # ------------------------------------------------------------------ one epoch's validation
    def _reference_accuracy(self) -> float:
        """The undefended student's validation clean accuracy (the selection rule's floor)."""
        assert self.val is not None
        with torch.no_grad():
            pred = torch.cat([self.student(c.to(self.device)).argmax(-1)
                              for c in torch.from_numpy(self.val.points).split(64)])
        return float((pred.cpu() == torch.from_numpy(self.val.labels)).float().mean())

    @torch.no_grad()
    def _val_accuracies(self) -> dict[str, float]:
        """Validation accuracy of the prompted student on the clean (``clean``) and adversarial
        (``adv``, when there are any) clouds."""
        assert self.val is not None
        text = self.learned.text(normalize=True)
        labels = torch.from_numpy(self.val.labels).to(self.device)
        scale = float(self.student.head.logit_scale)
        accs = {}
        for name, clouds in (("clean", torch.from_numpy(self.val.points)), ("adv", self.val_adv)):
            if clouds is None:
                continue
            pred = torch.cat([self._logits(c.to(self.device), text, scale).argmax(-1)
                              for c in clouds.split(self.cfg.batch_size)])
            accs[name] = float((pred == labels).float().mean())
        return accs

    def _logits(self, points: Tensor, text: Tensor, scale: float) -> Tensor:
        z = F.normalize(self.student.embed(points, self.learned.tokens()), dim=-1)
        return scale * z @ text.T

    def validate(self) -> float:
        """Score this epoch (:func:`selection_score`), append its history record and log it."""
        assert self.val is not None and self.reference is not None
        accs = self._val_accuracies()
        record = self._epoch_record(accs)
        record["score"] = round(selection_score(accs["clean"], accs.get("adv"), self.reference,
                                                self.switches.clean_tolerance), 6)
        self.history.append(record)
        self.ctx.log(f"{self.switches.defense_name}: " + ", ".join(f"{k} {v}" for k, v in record.items()))
        return record["score"]

    @torch.no_grad()
    def _epoch_record(self, accs: dict[str, float]) -> dict[str, Any]:
        """The epoch's history record (without its score); empties the tallies, restarts the clock."""
        learned = self.learned
        steps = max(self.tally.pop("steps", 1.0), 1.0)
        now = time.perf_counter()
        record = {"epoch": len(self.history) + 1, "seconds": round(now - self.clock, 3),
                  "val_clean": accs.get("clean"), "val_adv": accs.get("adv"),
                  "log_var": [round(float(v), 4) for v in learned.log_var.clamp(min=self.switches.lambda_min)],
                  "tau": [round(float(v), 4) for v in learned.log_tau.exp()],
                  **{f"drift/{k}": rms_change(v, self.initial[k]) for k, v in self.groups.items()
                     if k in ("point", "text") and v},
                  **{k: float(f"{v / steps:.4g}") for k, v in self.tally.items()}}
        self.tally.clear()
        self.clock = now
        return record


def _teachers_on_training_clouds(switches: Switches, ctx: DefenseContext, student: nn.Module, clip: ClipTeacher,
                                 projection: Any, projector: DepthProjector, adv_points: Tensor | None,
                                 adv_hash: str | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The teachers' embeddings of the training clouds and their diagnostics (logged, timed)."""
    started = time.perf_counter()
    features = teacher_features(ctx, switches.teachers, clip, projection, projector, adv_points, adv_hash,
                                point_teacher=switches.point_teacher, point_teacher_input=switches.point_teacher_input)
    diagnostics = {**teacher_diagnostics(ctx, student, features, adv_points, adv_hash),
                   "teacher_seconds": round(time.perf_counter() - started, 3)}
    ctx.log(f"{switches.defense_name}: teachers on the training clouds (class text bank): " + ", ".join(
        f"{k} {100 * v:.1f}% right" for k, v in diagnostics["teacher_accuracy"].items()) + "".join(
        f"; rescue {k} {100 * v:.1f}%" for k, v in diagnostics.get("rescue_rate", {}).items() if v is not None))
    warn_weak_teachers(diagnostics["teacher_accuracy"], ctx.train.num_classes, switches.defense_name)
    return features, diagnostics


def warn_weak_teachers(accuracy: dict[str, float], num_classes: int, name: str = "mrpd") -> list[str]:
    """Warn (RuntimeWarning) about each teacher whose accuracy on the training clouds through the
    student's class texts is at most twice chance: its embeddings do not live in the student's
    CLIP space (wrong or mismatched weights), so the confidence gate passes almost none of its
    clouds and the loss it contributes is ~0. Returns the warnings' texts."""
    chance = 1.0 / max(num_classes, 1)
    messages = [
        f"{name}: the {teacher} teacher is right on only {100 * acc:.1f}% of the training clouds (chance "
        f"{100 * chance:.1f}%), so its distillation term passes almost no cloud and teaches nothing; check its "
        "weights (models.<name>.pretrained) and that it embeds into the student's CLIP space"
        for teacher, acc in accuracy.items() if acc <= 2 * chance
    ]
    for message in messages:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return messages


def _check_frozen(student: nn.Module) -> None:
    """Raise if any student parameter requires grad (the backbone never trains)."""
    for name, p in student.named_parameters():
        if p.requires_grad:
            raise RuntimeError(f"mrpd: student parameter {name} requires grad; the student must stay frozen")


def train_prompts(switches: Switches, ctx: DefenseContext, student: nn.Module, learned: MRPDPrompts, clip: ClipTeacher,
                  projection: Any, projector: DepthProjector, attack: Attack, cfg: TrainConfig) -> dict[str, Any]:
    """Train ``learned`` in place (the module docstring's steps 1-5) and return the run record
    (step 6). ``attack`` crafts the adversarial training set; ``cfg`` is ``training.mrpd``."""
    adv_epochs = cfg.epochs // 2 if switches.adv_epochs is None else min(switches.adv_epochs, cfg.epochs)
    clean_epochs = cfg.epochs - adv_epochs
    crafted = crafted_training_set(ctx, attack, batch_size=cfg.batch_size) if adv_epochs > 0 else None
    adv_points = crafted.points if crafted is not None else None
    adv_hash = crafted.key_hash if crafted is not None else None
    features, diagnostics = _teachers_on_training_clouds(switches, ctx, student, clip, projection, projector,
                                                         adv_points, adv_hash)
    train_idx, val_idx = split_indices(ctx.train, cfg.val_fraction, ctx.seed)
    train = ctx.train.subset(train_idx)
    val = ctx.train.subset(val_idx) if len(val_idx) else None
    text_fit = fit_text_context(ctx, student, learned, train_idx, val_idx, point_prompts=switches.point_prompts,
                                name=switches.defense_name) \
        if switches.text_init == "fitted" and switches.text_prompts > 0 else None
    training = PromptTraining(switches, ctx, student, learned, cfg, features, adv_points, train_idx, val, val_idx,
                              clean_epochs)
    params = learned.parameters_to_train()
    result = training.run(train, params, adv_epochs)
    _check_frozen(student)
    history = training.history
    best = history[result.best_epoch] if history and result.best_epoch >= 0 else {}
    return {"epochs": cfg.epochs, "clean_epochs": clean_epochs, "best_epoch": result.best_epoch,
            "epochs_run": len(result.train_loss), "stopped_early": result.stopped_early,
            "val_robust_accuracy": best.get("val_adv"), "val_clean_accuracy": best.get("val_clean"),
            "reference_val_clean": training.reference, "text_init": text_fit,
            "history": history, "diagnostics": diagnostics,
            "trainable_parameters": sum(p.numel() for p in params),
            "victim_attack_success": None if crafted is None else crafted.success_rate,
            "victim": victim_weights_hash(ctx)[:16]}
