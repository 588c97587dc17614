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
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import Attack
from benchmark.core.params import Ablation
from benchmark.core.cache import cached_features
from benchmark.core.config import TrainConfig, to_jsonable
from benchmark.core.projection import DepthProjector
from benchmark.core.training import fit, split_indices
from benchmark.core.params import choice, count, fraction, param, positive
from defenses import register_defense
from defenses.adversarial_training import TRAINING_ATTACKS, crafted_training_set, training_attack, victim_weights_hash
from defenses.base import DefendedModel, DefenseContext, ModelDefense
from defenses.mrpd.losses import confidence_gate, gated_infonce, label_infonce, uncertainty_weighting
from defenses.prompting import PointPrompt, supports_prompts
from models.clip import DEFAULT_PROMPT_TEMPLATE, ClipTeacher, PromptedTextEncoder

__all__ = ["MRPD", "MRPDClassifier", "MRPDPrompts", "TEACHERS"]

TEACHERS = ("image", "point", "text")
RECIPE_VERSION = 2  # 2: history with drift / gradient norms, rescue rates, selection rule
_TAU0 = math.log(0.07)
_CTX_STEPS, _CTX_LR = 100, 1e-2  # text_init=fitted: full-batch Adam steps on the cached student embeddings


def _rms_change(params: list[Tensor], initial: list[Tensor]) -> float:
    """Root-mean-square change of ``params`` from ``initial`` per coordinate (4 significant digits)."""
    change = torch.cat([(p.detach() - p0).flatten() for p, p0 in zip(params, initial)])
    return float(f"{float(change.pow(2).mean().sqrt()):.4g}")


class MRPDPrompts(nn.Module):
    """Everything MRPD learns: point prompts, text context, 3 log-temperatures, 3 log-variances.

    Its ``state_dict`` is exactly the learned parameters (the cache entry of a trained MRPD).
    """

    def __init__(self, width: int, clip: ClipTeacher, class_names: list[str], *, point_prompts: int,
                 text_prompts: int, template: str, seed: int) -> None:
        super().__init__()
        self.point = PointPrompt(point_prompts, width, seed=seed) if point_prompts > 0 else None
        self.text = PromptedTextEncoder(clip, class_names, n_ctx=text_prompts, template=template, seed=seed + 1)
        self.log_tau = nn.Parameter(torch.full((3,), _TAU0))  # image, point, text
        self.log_var = nn.Parameter(torch.zeros(3))

    def tokens(self) -> Tensor | None:
        return None if self.point is None else self.point.tokens

    def parameters_to_train(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.numel() > 0]


class MRPDClassifier(nn.Module):
    """The defended model: ``logit_scale * cos(student(points, prompts), text_c)``.

    Costs one student forward (the prompts add ``P`` tokens); no teacher runs.
    """

    def __init__(self, student: nn.Module, prompts: Tensor | None, class_embeddings: Tensor, logit_scale: float) -> None:
        super().__init__()
        self.student = student
        self.register_buffer("prompts", None if prompts is None else prompts.detach().clone())
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.detach().float(), dim=-1))
        self.logit_scale = float(logit_scale)
        self.class_names = tuple(getattr(student, "class_names", ()) or ())

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    def train(self, mode: bool = True) -> MRPDClassifier:
        super().train(mode)
        self.student.eval()
        return self

    def embed(self, points: Tensor) -> Tensor:
        return self.student.embed(points, self.prompts)

    def forward(self, points: Tensor) -> Tensor:
        z = F.normalize(self.embed(points), dim=-1)
        return self.logit_scale * z @ self.class_embeddings.to(z.dtype).T


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
            every epoch, the paper), never before the first adversarial epoch; the schedule
            still spans ``epochs``.
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
        cfg = ctx.train_config(self.training_section)
        return dataclasses.replace(cfg, epochs=self.epochs) if self.epochs is not None else cfg

    def crafting_attack(self, ctx: DefenseContext) -> Attack:
        return training_attack(ctx, self.adv_attack, self.steps, self.adv_targeted, self.adv_budget)

    def _teachers(self, ctx: DefenseContext) -> tuple[ClipTeacher, Any, DepthProjector]:
        if ctx.zoo is None:
            raise ValueError("mrpd needs the model zoo for its teachers (DefenseContext.zoo); run it through "
                             "`bench run` or benchmark.api.evaluate")
        clip = ctx.zoo.get("clip")
        projection = dataclasses.replace(ctx.zoo.ctx.projection, image_size=clip.model.image_size, views=self.views)
        return clip, projection, DepthProjector(projection)

    def _features(self, ctx: DefenseContext, name: str, source_hash: str, extra: dict[str, Any],
                  clouds: np.ndarray | Tensor, encode: Any) -> Tensor:
        """``encode`` of every cloud ``[N, D]`` on ``ctx.device``, from the feature cache when present."""
        key = {"teacher": name, "weights": source_hash, "dataset": ctx.train.fingerprint, "split": ctx.train.split,
               "n": len(clouds), **extra}

        @torch.no_grad()
        def compute() -> np.ndarray:
            out = []
            data = torch.as_tensor(np.asarray(clouds))
            for start in range(0, len(data), 64):
                out.append(encode(data[start : start + 64].to(ctx.device)).float().cpu())
            return torch.cat(out).numpy()

        features, hit = cached_features(ctx.cache_dir, f"mrpd-{name}", key, compute)
        ctx.log(f"mrpd: {name} features {'loaded from the cache' if hit else 'computed'} {features.shape}")
        return torch.from_numpy(np.array(features)).to(ctx.device)  # mmap -> memory

    # ------------------------------------------------------------------ prepare
    def prepare(self, ctx: DefenseContext) -> nn.Module:
        student = ctx.victim
        if not supports_prompts(student) or not hasattr(getattr(student, "head", None), "class_embeddings"):
            raise ValueError("mrpd needs a prompt-capable victim in the CLIP space (a model tagged 'clip-space', "
                             "e.g. point-transformer-student); see: bench list models")
        student.requires_grad_(False).eval()
        cfg = self.train_config(ctx)
        clip, projection, projector = self._teachers(ctx)
        names = list(getattr(student, "class_names", ctx.train.class_names))
        learned = MRPDPrompts(int(student.encoder.width), clip.model, names, point_prompts=self.point_prompts,
                              text_prompts=self.text_prompts, template=self.template, seed=ctx.seed).to(ctx.device)
        attack = self.crafting_attack(ctx)
        spec = {"recipe": RECIPE_VERSION, "params": to_jsonable(self.params()),
                "train": to_jsonable(dataclasses.asdict(cfg)), "clip": clip.weights_hash,
                "attack": to_jsonable(dataclasses.asdict(attack)),
                "point_teacher": ctx.zoo.get(self.point_teacher).weights_hash if "point" in self.teachers else None}

        def train() -> dict[str, Any]:
            return self._train(ctx, student, learned, clip, projection, projector, attack, cfg)

        meta, cached = ctx.cached_training(self.defense_name, learned, spec, train)
        with torch.no_grad():
            text = learned.text(normalize=True)
        model = MRPDClassifier(student, learned.tokens(), text, float(student.head.logit_scale))
        defended = DefendedModel(model, kind="model", gradient="exact", randomized=False, name=self.defense_name)
        defended.meta = {**meta, "cached": cached}
        return defended

    # ------------------------------------------------------------------ training
    def _teacher_features(self, ctx: DefenseContext, clip: ClipTeacher, projection: Any, projector: DepthProjector,
                          adv_points: Tensor | None, adv_hash: str | None) -> dict[str, Tensor]:
        """Per training cloud, the frozen teachers' normalised embeddings (cached): ``image/clean``,
        ``image/adv``, ``point/clean``, ``point/adv`` as the switches need them."""
        clip_model = clip.model.eval().requires_grad_(False)

        def image_embed(x: Tensor) -> Tensor:
            v = projection.views
            z = F.normalize(clip_model.encode_image(projector(x)).float(), dim=-1)
            return F.normalize(z.view(x.shape[0], v, -1).mean(1), dim=-1)

        proj_key = {"projection": to_jsonable(dataclasses.asdict(projection))}
        feats: dict[str, Tensor] = {}
        if "image" in self.teachers:
            feats["image/clean"] = self._features(ctx, "image", clip.weights_hash, proj_key, ctx.train.points, image_embed)
            if adv_points is not None:
                feats["image/adv"] = self._features(ctx, "image", clip.weights_hash, {**proj_key, "adv": adv_hash},
                                                    adv_points, image_embed)
        if "point" in self.teachers:
            teacher = ctx.zoo.get(self.point_teacher)
            teacher_model = teacher.model.eval().requires_grad_(False)
            point_embed = lambda x: F.normalize(teacher_model.embed(x).float(), dim=-1)  # noqa: E731
            feats["point/clean"] = self._features(ctx, "point", teacher.weights_hash, {}, ctx.train.points, point_embed)
            if adv_points is not None and self.point_teacher_input == "student":
                feats["point/adv"] = self._features(ctx, "point", teacher.weights_hash, {"adv": adv_hash}, adv_points,
                                                    point_embed)
        return feats

    def _diagnostics(self, ctx: DefenseContext, student: nn.Module, features: dict[str, Tensor],
                     adv_points: Tensor | None, adv_hash: str | None) -> dict[str, Any]:
        """On the training clouds: each teacher's accuracy through the student's class bank and,
        on the adversarial training clouds, the undefended student's accuracy and each teacher's
        rescue rate (right where the student is wrong)."""
        bank = F.normalize(student.head.class_embeddings.detach().float(), dim=-1).to(ctx.device)
        labels = torch.from_numpy(ctx.train.labels).to(ctx.device)
        right = {k: (v @ bank.T).argmax(-1) == labels for k, v in features.items()}
        out: dict[str, Any] = {"teacher_accuracy": {k: round(float(v.float().mean()), 4) for k, v in right.items()}}
        if adv_points is not None:
            embed = lambda x: F.normalize(student.embed(x).float(), dim=-1)  # noqa: E731
            z = self._features(ctx, "student", victim_weights_hash(ctx), {"adv": adv_hash}, adv_points, embed)
            wrong = (z @ bank.T).argmax(-1) != labels
            out["student_adv_accuracy"] = round(1.0 - float(wrong.float().mean()), 4)
            out["rescue_rate"] = {k: (round(float(v[wrong].float().mean()), 4) if bool(wrong.any()) else None)
                                  for k, v in right.items()}
        return out

    def _fit_text_context(self, ctx: DefenseContext, student: nn.Module, learned: MRPDPrompts,
                          train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, Any]:
        """``text_init=fitted``: fit the text context alone (CoOp: cross-entropy of the frozen
        student's clean embeddings, with the initial point prompts, against the prompted class
        embeddings) for ``_CTX_STEPS`` full-batch Adam steps, keeping the step most accurate on
        the validation clouds. Returns what it did (for the run record)."""
        tokens = learned.tokens()
        embed = lambda x: F.normalize(student.embed(x, tokens).float(), dim=-1)  # noqa: E731
        key = {"point_prompts": self.point_prompts, "seed": ctx.seed}
        z = self._features(ctx, "student-init", victim_weights_hash(ctx), key, ctx.train.points, embed)
        labels = torch.from_numpy(ctx.train.labels).to(ctx.device)
        rows = torch.from_numpy(train_idx).to(ctx.device)
        check = torch.from_numpy(val_idx).to(ctx.device) if len(val_idx) else rows
        scale = float(student.head.logit_scale)
        param_ = learned.text.ctx
        optimizer = torch.optim.Adam([param_], lr=_CTX_LR)

        def accuracy() -> float:
            with torch.no_grad():
                return float(((z[check] @ learned.text(normalize=True).T).argmax(-1) == labels[check]).float().mean())

        started = time.perf_counter()
        initial = best_acc = accuracy()
        best, best_step = param_.detach().clone(), 0
        for i in range(1, _CTX_STEPS + 1):
            loss = F.cross_entropy(scale * z[rows] @ learned.text(normalize=True).T, labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i % 10 == 0 and (acc := accuracy()) > best_acc:
                best, best_acc, best_step = param_.detach().clone(), acc, i
        with torch.no_grad():
            param_.copy_(best)
        record = {"steps": _CTX_STEPS, "best_step": best_step, "val_clean_before": round(initial, 4),
                  "val_clean_after": round(best_acc, 4), "seconds": round(time.perf_counter() - started, 3)}
        ctx.log(f"{self.defense_name}: text context fitted: validation clean accuracy {initial:.3f} -> {best_acc:.3f}")
        return record

    def _selection_score(self, clean: float, robust: float | None, reference: float) -> float:
        """Higher is better: validation robust accuracy (clean if no adversarial clouds), clean
        breaking ties; with ``clean_tolerance``, an epoch whose clean accuracy fell more than the
        tolerance below ``reference`` (the undefended student's) scores below every other."""
        if self.clean_tolerance is not None and clean < reference - self.clean_tolerance - 1e-9:
            return -1.0 + clean
        return (clean if robust is None else robust) + 1e-4 * clean

    def _train(self, ctx: DefenseContext, student: nn.Module, learned: MRPDPrompts, clip: Any, projection: Any,
               projector: DepthProjector, attack: Attack, cfg: TrainConfig) -> dict[str, Any]:
        device = ctx.device
        adv_epochs = cfg.epochs // 2 if self.adv_epochs is None else min(self.adv_epochs, cfg.epochs)
        clean_epochs = cfg.epochs - adv_epochs
        crafted = crafted_training_set(ctx, attack, batch_size=cfg.batch_size) if adv_epochs > 0 else None
        adv_points = crafted.points if crafted is not None else None
        adv_hash = crafted.key_hash if crafted is not None else None
        started = time.perf_counter()
        features = self._teacher_features(ctx, clip, projection, projector, adv_points, adv_hash)
        diagnostics = {**self._diagnostics(ctx, student, features, adv_points, adv_hash),
                       "teacher_seconds": round(time.perf_counter() - started, 3)}
        ctx.log(f"{self.defense_name}: teachers on the training clouds (class text bank): " + ", ".join(
            f"{k} {100 * v:.1f}% right" for k, v in diagnostics["teacher_accuracy"].items()) + "".join(
            f"; rescue {k} {100 * v:.1f}%" for k, v in diagnostics.get("rescue_rate", {}).items() if v is not None))

        train_idx, val_idx = split_indices(ctx.train, cfg.val_fraction, ctx.seed)
        train = ctx.train.subset(train_idx)
        val = ctx.train.subset(val_idx) if len(val_idx) else None
        text_fit = self._fit_text_context(ctx, student, learned, train_idx, val_idx) \
            if self.text_init == "fitted" and self.text_prompts > 0 else None
        rows_of = torch.from_numpy(train_idx).to(device)
        per_epoch = max(1, len(train) // cfg.batch_size)
        calls = [0]
        tally: dict[str, float] = {}
        history: list[dict[str, Any]] = []
        weights = torch.tensor(self.fixed_weights, dtype=torch.float32, device=device)
        groups = {"point": [] if learned.point is None else [learned.point.tokens], "text": [learned.text.ctx],
                  "tau": [learned.log_tau], "log_var": [learned.log_var]}
        groups = {k: [p for p in v if p.numel()] for k, v in groups.items()}
        initial = {k: [p.detach().clone() for p in v] for k, v in groups.items()}

        def logits_of(points: Tensor, text: Tensor) -> Tensor:
            z = F.normalize(student.embed(points, learned.tokens()), dim=-1)
            return float(student.head.logit_scale) * z @ text.T

        def add(name: str, value: float) -> None:
            tally[name] = tally.get(name, 0.0) + value

        mixer = torch.Generator().manual_seed(ctx.seed + 7)  # which samples of an adversarial batch are adversarial

        def step(points: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
            epoch = calls[0] // per_epoch
            calls[0] += 1
            adversarial = epoch >= clean_epochs
            rows = rows_of[idx.to(device)]
            mask = None  # [B] bool: the samples that are adversarial in this batch
            if adversarial:
                mask = (torch.rand(len(rows), generator=mixer) < self.adv_mix).to(device) if self.adv_mix < 1 \
                    else torch.ones(len(rows), dtype=torch.bool, device=device)
                points = torch.where(mask[:, None, None], adv_points[rows.cpu()].to(device), points)
                add("adv_share", float(mask.float().mean()))
            z = student.embed(points, learned.tokens())
            text = learned.text(normalize=True)
            losses, slots, gates = [], [], []
            for slot, teacher in enumerate(("image", "point")):
                if teacher not in self.teachers:
                    continue
                f = features[f"{teacher}/clean"][rows]
                if mask is not None and (teacher == "image" or self.point_teacher_input == "student"):
                    f = torch.where(mask[:, None], features[f"{teacher}/adv"][rows], f)
                if not self.gate:
                    gate = torch.ones_like(labels, dtype=torch.bool)
                elif self.gate_bank == "class":  # the paper: label among the top-k of the C classes
                    gate = confidence_gate(f, text.detach(), labels, self.gate_k)
                else:  # the released code: top-k over the batch's label embeddings, compared with the class id
                    gate = confidence_gate(f, text.detach()[labels], labels, self.gate_k, bank_kind="batch")
                gates.append(gate)
                add(f"gate/{teacher}", float(gate.float().mean()))
                losses.append(gated_infonce(z, f, gate, learned.log_tau[slot]))
                slots.append(slot)
                add(f"loss/{teacher}", float(losses[-1].detach()))
            if "text" in self.teachers:
                text_gate = None
                if self.gate and self.gate_text and gates:
                    text_gate = torch.stack(gates).any(0)
                losses.append(label_infonce(z, text, labels, learned.log_tau[2], text_gate))
                slots.append(2)
                add("loss/text", float(losses[-1].detach()))
            add("steps", 1.0)
            if self.weighting == "dynamic":
                total = uncertainty_weighting(losses, learned.log_var[slots], self.lambda_min)
            else:
                total = sum(weights[s] * loss for s, loss in zip(slots, losses))
            # per-epoch means in the history: "loss" = the optimised objective, "loss/<teacher>" its terms
            add("loss", float(total.detach()))
            return total

        def after_backward() -> None:  # per-group gradient norms before clipping, averaged per epoch
            for name, params_ in groups.items():
                grads = [p.grad for p in params_ if p.grad is not None]
                if grads:
                    add(f"grad/{name}", float(torch.cat([g.flatten() for g in grads]).norm()))

        val_adv = adv_points[torch.from_numpy(val_idx)] if (adv_points is not None and val is not None) else None
        reference = None
        if val is not None:  # the undefended student's validation clean accuracy (the selection rule's floor)
            with torch.no_grad():
                pred = torch.cat([student(c.to(device)).argmax(-1) for c in torch.from_numpy(val.points).split(64)])
            reference = float((pred.cpu() == torch.from_numpy(val.labels)).float().mean())

        @torch.no_grad()
        def validate() -> float:
            assert val is not None and reference is not None
            text = learned.text(normalize=True)
            labels = torch.from_numpy(val.labels).to(device)
            accs = {}
            for name, clouds in (("clean", torch.from_numpy(val.points)), ("adv", val_adv)):
                if clouds is None:
                    continue
                pred = torch.cat([logits_of(c.to(device), text).argmax(-1) for c in clouds.split(cfg.batch_size)])
                accs[name] = float((pred == labels).float().mean())
            steps = max(tally.pop("steps", 1.0), 1.0)
            now = time.perf_counter()
            record = {"epoch": len(history) + 1, "seconds": round(now - clock[0], 3),
                      "val_clean": accs.get("clean"), "val_adv": accs.get("adv"),
                      "log_var": [round(float(v), 4) for v in learned.log_var.clamp(min=self.lambda_min)],
                      "tau": [round(float(v), 4) for v in learned.log_tau.exp()],
                      **{f"drift/{k}": _rms_change(v, initial[k]) for k, v in groups.items()
                         if k in ("point", "text") and v},
                      **{k: float(f"{v / steps:.4g}") for k, v in tally.items()}}
            tally.clear()
            clock[0] = now
            record["score"] = round(self._selection_score(accs["clean"], accs.get("adv"), reference), 6)
            history.append(record)
            ctx.log(f"{self.defense_name}: " + ", ".join(f"{k} {v}" for k, v in record.items()))
            return record["score"]

        params = learned.parameters_to_train()
        clock = [time.perf_counter()]  # epoch wall time (training + this validation), per history record
        result = fit(learned, train, cfg, step, params=params, validate=validate if val is not None else None,
                     device=device, seed=ctx.seed, description=self.defense_name, progress=ctx.progress, log=ctx.log,
                     patience=self.patience, min_epochs=clean_epochs + 1 if adv_epochs else 0,
                     after_backward=after_backward)
        for name, p in student.named_parameters():  # the backbone never trains
            if p.requires_grad:
                raise RuntimeError(f"mrpd: student parameter {name} requires grad; the student must stay frozen")
        best = history[result.best_epoch] if history and result.best_epoch >= 0 else {}
        return {"epochs": cfg.epochs, "clean_epochs": clean_epochs, "best_epoch": result.best_epoch,
                "epochs_run": len(result.train_loss), "stopped_early": result.stopped_early,
                "val_robust_accuracy": best.get("val_adv"), "val_clean_accuracy": best.get("val_clean"),
                "reference_val_clean": reference, "text_init": text_fit,
                "history": history, "diagnostics": diagnostics,
                "trainable_parameters": sum(p.numel() for p in params),
                "victim_attack_success": None if crafted is None else crafted.success_rate,
                "victim": victim_weights_hash(ctx)[:16]}
