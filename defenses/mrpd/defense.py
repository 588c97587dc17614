"""``mrpd``: multimodal robust prompt distillation (Du et al., AAAI 2026; PROTOCOL.md sections 4-5).

A frozen student (the prompt-capable point transformer, already in the CLIP space) learns
``P`` point-prompt tokens, ``T`` text-context tokens, three log-temperatures and three
log-variances — nothing else — by distilling from three frozen teachers:

1. image: the CLIP image tower on depth projections of the cloud (clean in the first
   half of the epochs, the adversarial cloud in the second);
2. point: the larger point transformer in the same embedding space (clean cloud, the
   paper; or the student's own input, the released code);
3. text: the CLIP text tower with the learnable context, one embedding per class.

Image and point teachers count on a sample only when their own top-k prediction holds the
label (confidence gate). Losses: symmetric InfoNCE student <-> teacher over the gated
samples (learnable temperature each) and student <-> the label's prompted text
embedding; combined by uncertainty weighting ``sum exp(-s) L + s``. Epochs ``0..E/2-1`` on
clean clouds, the rest on PGD examples crafted once against the undefended student.

The frozen teachers' embeddings of every training cloud (clean and adversarial) are
computed once and kept in the feature cache (``benchmark.core.cache.cached_features``), so a
warm epoch runs the student and the small text tower only. At test time the defended
model is the student with its prompts and the fixed (learned-context) class embeddings:
no teacher runs.

This module is the registered defense and its switches; it wires the parts:
``teachers`` (the frozen teachers and their cached embeddings), ``prompts`` (what is learned
and the defended classifier), ``training`` (the loop and the epoch selection), ``losses``.
What feeds the trained prompts' cache key lives here (:meth:`MRPD.prepare`'s ``spec``:
``RECIPE_VERSION``, the switches, the training settings, the teachers' and the attack's
identities) and in :class:`~defenses.mrpd.prompts.MRPDPrompts`' parameter names.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from attacks.base import Attack
from benchmark.core.config import TrainConfig, to_jsonable
from benchmark.core.params import Ablation, choice, count, fraction, param, positive
from defenses import register_defense
from defenses.adversarial_training import TRAINING_ATTACKS, training_attack
from defenses.base import DefendedModel, DefenseContext, ModelDefense
from defenses.mrpd.prompts import MRPDClassifier, MRPDPrompts
from defenses.mrpd.teachers import TEACHERS, load_teachers
from defenses.mrpd.training import train_prompts
from defenses.prompting import supports_prompts
from models.clip import DEFAULT_PROMPT_TEMPLATE

__all__ = ["MRPD", "MRPDClassifier", "MRPDPrompts", "TEACHERS"]

RECIPE_VERSION = 2  # 2: history with drift / gradient norms, rescue rates, selection rule (in the cache key)


@register_defense("mrpd")
@dataclass
class MRPD(ModelDefense):
    """Multimodal robust prompt distillation: prompts on a frozen student, three frozen teachers.

    Switches (``--set defenses.mrpd.<name>=...``; defaults = the paper):
        teachers: subset of ``image``, ``point``, ``text``.
        gate: confidence gate on (paper) / off; gate_k: its top-k (paper 1).
        gate_bank: ``class`` (paper: top-k over the C class embeddings) or ``batch`` (released code).
        gate_text: the text loss counts only samples passing a teacher gate (paper's Algorithm 1).
        weighting: ``dynamic`` (uncertainty weighting) or ``fixed`` (``fixed_weights``).
        fixed_weights: image, point, text weights for ``weighting=fixed``.
        lambda_min: lower clamp of the log-variances (paper -1.0, code -0.8).
        point_prompts / text_prompts: sizes (paper 10 / 3; 0 = off).
        epochs: total epochs (None = ``training.mrpd.epochs``); adv_epochs: epochs on PGD
            examples at the end (None = half).
        views: depth views of the image teacher (mean of the views' embeddings; paper code 1).
        point_teacher: the point teacher's model name; point_teacher_input: ``clean``
            (paper) or ``student`` (its input is the student's batch, the released code).
        adv_attack: the attack crafting the training examples once: ``pgd`` (the paper) or
            ``apgd`` (the run's settings of that attack).
        steps, adv_targeted, adv_budget: its steps / targeted / absolute L2 budget (None = the
            run's, for ``pgd`` the paper's choice).
        template: the class prompt after the context tokens.
        adv_mix: the share of each batch of the adversarial epochs drawn as its adversarial
            example (the rest stay clean, with the teachers' clean features; paper 1.0).
        text_init: ``random`` (N(0, 0.05), the paper's code) or ``fitted``: the text context
            starts fitted (CoOp, cached) to the frozen student's clean training embeddings, so
            every variant, with or without the text loss, classifies with a trained head.
        patience: stop once this many epochs fail to beat the best validation score (None:
            every epoch, the paper); the schedule still spans ``epochs``.
        patience_scope: ``phase``: the adversarial epochs are not cut short before ``patience``
            of them have run (a best epoch in the clean half does not end the run at its first
            adversarial epoch); ``run``: counted from the best epoch of the whole run, never
            before the first adversarial epoch (the rule before 2026-12-05).
        clean_tolerance: the checkpoint kept is the epoch with the best validation robust
            accuracy among those whose validation clean accuracy is at least the undefended
            student's minus this (None: any epoch, the paper's rule); an epoch outside the
            tolerance never beats one inside it.
    """

    #: the registered name: cache entries, logs and the defended model's name
    defense_name: ClassVar[str] = "mrpd"
    #: the ``training.<section>`` this defense trains with (prompt-at shares MRPD's)
    training_section: ClassVar[str] = "mrpd"

    teachers: list[str] = field(default_factory=lambda: list(TEACHERS))
    gate: bool = param(True)
    gate_k: int = count(1)
    gate_bank: str = choice("class", ("class", "batch"))
    gate_text: bool = param(True)
    weighting: str = choice("dynamic", ("dynamic", "fixed"))
    fixed_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    lambda_min: float = param(-1.0)
    point_prompts: int = count(10, minimum=0)
    text_prompts: int = count(3, minimum=0)
    epochs: int | None = count(None)
    adv_epochs: int | None = count(None, minimum=0)
    views: int = count(1)
    point_teacher: str = param("point-transformer-teacher")
    point_teacher_input: str = choice("clean", ("clean", "student"))
    adv_attack: str = choice("pgd", TRAINING_ATTACKS)
    steps: int | None = count(None)
    adv_targeted: bool | None = param(None, kind="bool")
    adv_budget: float | None = positive(None)
    template: str = param(DEFAULT_PROMPT_TEMPLATE)
    adv_mix: float = fraction(1.0)
    text_init: str = choice("random", ("random", "fitted"))
    patience: int | None = count(None)
    patience_scope: str = choice("phase", ("phase", "run"))
    clean_tolerance: float | None = fraction(None)

    #: ``bench ablate mrpd`` also runs this defense (MRPD without teachers) and tests every variant against it
    ablation_control: ClassVar[str | None] = "prompt-at"

    #: mechanism -> the ablation variant that removes it (``bench ablate mrpd`` writes what each is worth)
    mechanisms: ClassVar[dict[str, str]] = {
        "image teacher": "no-image", "point teacher": "no-point", "text teacher (loss)": "no-text",
        "confidence gate": "no-gate", "uncertainty weighting": "fixed-weights", "adversarial half": "clean-only",
    }

    #: ``bench ablate mrpd``: the paper's ablations (PROTOCOL.md section 6, ModelNet40 mean robust
    #: accuracy) and a few more switches; the first entry is the full method.
    ablations: ClassVar[dict[str, Ablation]] = {
        "full": Ablation({}, "all three teachers, gate, dynamic weights, 10 point / 3 text prompts", 72.58),
        "no-image": Ablation({"teachers": ["point", "text"]}, "without the image (depth-projection) teacher", 70.24),
        "no-point": Ablation({"teachers": ["image", "text"]}, "without the point teacher", 70.38),
        "no-text": Ablation({"teachers": ["image", "point"]}, "without the text loss"),
        "no-gate": Ablation({"gate": False}, "every sample distils from every teacher", 70.99),
        "fixed-weights": Ablation({"weighting": "fixed"}, "fixed weights 1, 1, 1 instead of uncertainty weighting"),
        "prompts-5-3": Ablation({"point_prompts": 5, "text_prompts": 3}, "5 point / 3 text prompts", 69.91),
        "prompts-10-5": Ablation({"point_prompts": 10, "text_prompts": 5}, "10 point / 5 text prompts", 70.78),
        "prompts-15-3": Ablation({"point_prompts": 15, "text_prompts": 3}, "15 point / 3 text prompts", 69.94),
        "clean-only": Ablation({"adv_epochs": 0}, "every epoch on clean clouds (no adversarial half)"),
        "paper-rule": Ablation({"clean_tolerance": None},
                               "keep the best epoch in validation robust accuracy whatever its clean accuracy"),
        "paper-pgd": Ablation({"adv_targeted": None, "adv_budget": None},
                              "second half on the paper's PGD examples (targeted, L2 0.08; they fool few clouds)"),
        "adv-mix-0.5": Ablation({"adv_mix": 0.5}, "second-half batches half adversarial, half clean"),
    }

    def __post_init__(self) -> None:
        self.teachers = [str(t) for t in (self.teachers.split(",") if isinstance(self.teachers, str) else self.teachers)]
        bad = [t for t in self.teachers if t not in TEACHERS]
        if bad or not self.teachers:
            raise ValueError(f"mrpd: teachers must be a non-empty subset of {list(TEACHERS)}; got {self.teachers}")
        super().__post_init__()
        if self.point_prompts == 0 and self.text_prompts == 0:
            raise ValueError("mrpd: nothing to learn (point_prompts = text_prompts = 0)")
        if len(self.fixed_weights) != 3:
            raise ValueError(f"mrpd: fixed_weights needs 3 values (image, point, text); got {self.fixed_weights}")

    # ------------------------------------------------------------------ pieces
    def train_config(self, ctx: DefenseContext) -> TrainConfig:
        """``training.<training_section>`` with ``epochs`` overridden when set."""
        cfg = ctx.train_config(self.training_section)
        return dataclasses.replace(cfg, epochs=self.epochs) if self.epochs is not None else cfg

    def crafting_attack(self, ctx: DefenseContext) -> Attack:
        """The attack crafting the adversarial training set once (``adv_attack`` with the overrides)."""
        return training_attack(ctx, self.adv_attack, self.steps, self.adv_targeted, self.adv_budget)

    # ------------------------------------------------------------------ prepare
    def prepare(self, ctx: DefenseContext) -> nn.Module:
        """Train the prompts (or load them from the cache) and return the defended student."""
        student = ctx.victim
        if not supports_prompts(student) or not hasattr(getattr(student, "head", None), "class_embeddings"):
            raise ValueError("mrpd needs a prompt-capable victim in the CLIP space (a model tagged 'clip-space', "
                             "e.g. point-transformer-student); see: bench list models")
        student.requires_grad_(False).eval()
        cfg = self.train_config(ctx)
        clip, projection, projector = load_teachers(ctx, self.views)
        names = list(getattr(student, "class_names", ctx.train.class_names))
        learned = MRPDPrompts(int(student.encoder.width), clip.model, names, point_prompts=self.point_prompts,
                              text_prompts=self.text_prompts, template=self.template, seed=ctx.seed).to(ctx.device)
        attack = self.crafting_attack(ctx)
        spec = {"recipe": RECIPE_VERSION, "params": to_jsonable(self.params()),
                "train": to_jsonable(dataclasses.asdict(cfg)), "clip": clip.weights_hash,
                "attack": to_jsonable(dataclasses.asdict(attack)),
                "point_teacher": ctx.zoo.get(self.point_teacher).weights_hash if "point" in self.teachers else None}

        def train() -> dict[str, Any]:
            return train_prompts(self, ctx, student, learned, clip, projection, projector, attack, cfg)

        meta, cached = ctx.cached_training(self.defense_name, learned, spec, train)
        with torch.no_grad():
            text = learned.text(normalize=True)
        model = MRPDClassifier(student, learned.tokens(), text, float(student.head.logit_scale))
        defended = DefendedModel(model, kind="model", gradient="exact", randomized=False, name=self.defense_name)
        defended.meta = {**meta, "cached": cached}
        return defended
