"""Do MRPD's teachers see through the attacks that fool the student? (the teacher-robustness table)

MRPD can only help where a teacher is right on an example the student gets wrong: its
losses pull the student's embedding of that example towards the teacher's. This module
measures that, for any sets of clouds and any *probes* -- models that map a cloud to an
embedding in the shared CLIP space and classify it by cosine against a class bank:

* **accuracy** of each probe on each set;
* **rescue rate**: of the clouds the reference probe (the undefended student) gets wrong,
  the share the probe gets right -- what a teacher can teach on that set;
* **drift**: the mean cosine between a probe's embedding of an adversarial cloud and of
  its clean original (1 = the attack did not move the embedding at all).

Everything here is inference on given clouds (no crafting, no training): the harness
(``benchmark.teachers``) gathers the sets from the adversarial-example cache and the probes
from the zoo and the trained MRPD.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.projection import DepthProjector

__all__ = ["CloudSet", "Probe", "image_probe", "probe_markdown", "probe_table", "teacher_probes"]


@dataclass
class Probe:
    """A classifier by cosine in an embedding space.

    Attributes:
        name: column name in the tables.
        embed: ``[B, N, 3] -> [B, D]`` (any scale; normalised here), under ``no_grad``.
        bank: ``[C, D]`` class embeddings (any scale; normalised here).
        what: one line for the table's legend.
    """

    name: str
    embed: Callable[[Tensor], Tensor]
    bank: Tensor
    what: str = ""


@dataclass
class CloudSet:
    """Clouds to classify: ``points`` ``[M, N, 3]`` (CPU), ``labels`` ``[M]`` long; ``clean``
    names the set these clouds were crafted from, in the same order (drift is measured
    against it), None for a clean set."""

    name: str
    points: Tensor
    labels: Tensor
    clean: str | None = None

    def __post_init__(self) -> None:
        if self.points.ndim != 3 or self.points.shape[-1] != 3:
            raise ValueError(f"set {self.name!r}: points must be [M, N, 3]; got {tuple(self.points.shape)}")
        if self.labels.shape != self.points.shape[:1]:
            raise ValueError(f"set {self.name!r}: {self.points.shape[0]} clouds but labels of shape "
                             f"{tuple(self.labels.shape)}")


def image_probe(clip: nn.Module, projection: Any, bank: Tensor, views: int, name: str | None = None) -> Probe:
    """The image teacher as MRPD uses it: ``views`` depth projections around the up axis,
    each encoded by the CLIP image tower, the normalised mean of the normalised embeddings."""
    config = dataclasses.replace(projection, views=views)
    projector = DepthProjector(config)

    def embed(points: Tensor) -> Tensor:
        z = F.normalize(clip.encode_image(projector(points)).float(), dim=-1)
        return z.view(points.shape[0], views, -1).mean(1)

    return Probe(name or f"image-{views}v", embed, bank,
                 f"CLIP image tower on {views} depth view{'s' if views > 1 else ''}, class text bank")


def teacher_probes(zoo: Any, student: nn.Module, point_teacher: str, views: int, *,
                   reference: str = "student") -> list[Probe]:
    """The undefended ``student`` (named ``reference``), the zoo's CLIP image tower on 1 and on
    ``views`` depth views, and the zoo's ``point_teacher``; every probe classifies against the
    student's class bank (the CLIP class text embeddings it was trained onto)."""
    clip = zoo.get("clip").model.eval()
    projection = dataclasses.replace(zoo.ctx.projection, image_size=clip.image_size)
    bank = student.head.class_embeddings.detach()
    teacher = zoo.get(point_teacher).model.eval()
    return [
        Probe(reference, lambda x: student.embed(x), bank, "the undefended student (the victim)"),
        image_probe(clip, projection, bank, 1),
        *([image_probe(clip, projection, bank, views)] if views > 1 else []),
        Probe("point-teacher", lambda x: teacher.embed(x), bank, f"`{point_teacher}`, class text bank"),
    ]


@torch.no_grad()
def _embed(probe: Probe, points: Tensor, batch_size: int, device: torch.device) -> Tensor:
    out = [F.normalize(probe.embed(chunk.to(device)).float(), dim=-1).cpu() for chunk in points.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, probe.bank.shape[-1])


def probe_table(probes: Sequence[Probe], sets: Sequence[CloudSet], *, reference: str, batch_size: int = 64,
                device: torch.device | str = "cpu", log: Callable[[str], None] = lambda _: None
                ) -> list[dict[str, Any]]:
    """One row per (set, probe): ``n``, ``accuracy``, ``rescue`` (share of the reference
    probe's errors this probe gets right; None for the reference itself or where it makes
    none), ``rescued`` / ``reference_wrong`` (the counts behind it), ``drift`` (mean cosine
    of the adversarial vs the clean embedding; None for a clean set).

    Args:
        probes: the models; ``reference`` must name one of them.
        sets: the clouds; a set's ``clean`` must name an earlier set of the same size.

    Raises:
        ValueError: unknown reference, a set whose clean original is missing or of another size.
    """
    device = torch.device(device)
    names = [p.name for p in probes]
    if reference not in names:
        raise ValueError(f"reference probe {reference!r} is not among the probes {names}")
    by_name = {s.name: s for s in sets}
    for s in sets:
        if s.clean is not None and (s.clean not in by_name or len(by_name[s.clean].labels) != len(s.labels)):
            raise ValueError(f"set {s.name!r}: its clean set {s.clean!r} is missing or of another size")
    embeddings: dict[tuple[str, str], Tensor] = {}
    correct: dict[tuple[str, str], Tensor] = {}
    for s in sets:
        for p in probes:
            z = _embed(p, s.points, batch_size, device)
            bank = F.normalize(p.bank.detach().float().cpu(), dim=-1)
            embeddings[s.name, p.name] = z
            correct[s.name, p.name] = (z @ bank.T).argmax(-1) == s.labels.cpu()
        log(f"teachers: {s.name} ({len(s.labels)} clouds) " + ", ".join(
            f"{p.name} {100 * float(correct[s.name, p.name].float().mean()):.1f}%" for p in probes))
    rows = []
    for s in sets:
        wrong = ~correct[s.name, reference]
        for p in probes:
            right = correct[s.name, p.name]
            rescued = int((right & wrong).sum())
            drift = None
            if s.clean is not None:
                drift = float((embeddings[s.name, p.name] * embeddings[s.clean, p.name]).sum(-1).mean())
            rows.append({
                "set": s.name, "probe": p.name, "n": len(s.labels), "accuracy": float(right.float().mean()),
                "rescue": None if p.name == reference or not int(wrong.sum()) else rescued / int(wrong.sum()),
                "rescued": None if p.name == reference else rescued, "reference_wrong": int(wrong.sum()),
                "drift": drift,
            })
    return rows


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def probe_markdown(rows: Sequence[Mapping[str, Any]], probes: Sequence[Probe], *, reference: str,
                   intro: str = "") -> str:
    """Three tables (accuracy, rescue rate, drift), one row per set, one column per probe."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    cell = {(r["set"], r["probe"]): r for r in rows}
    names = [p.name for p in probes]
    lines = [intro, ""] if intro else []
    lines += ["Probes: " + "; ".join(f"`{p.name}`: {p.what}" for p in probes) + ".", ""]

    lines.extend(["**Accuracy (%)** of each probe on each set.", "", "| set | n | " + " | ".join(names) + " |",
                  "|---|---:|" + "---:|" * len(names)])
    for s in sets:
        lines.append(f"| {s} | {cell[s, names[0]]['n']} | " + " | ".join(_pct(cell[s, p]["accuracy"]) for p in names)
                     + " |")
    lines.append("")
    others = [p for p in names if p != reference]
    wrong = {s: cell[s, reference]["reference_wrong"] for s in sets}
    lines.extend([(f"**Rescue rate (%)**: of the clouds `{reference}` gets wrong, the share each probe gets right "
                   "(what a teacher can teach there)."), "",
                  f"| set | `{reference}` wrong | " + " | ".join(others) + " |",
                  "|---|---:|" + "---:|" * len(others)])
    for s in sets:
        lines.append(f"| {s} | {wrong[s]} | " + " | ".join(_pct(cell[s, p]["rescue"]) for p in others) + " |")
    lines.append("")
    adversarial = [s for s in sets if cell[s, names[0]]["drift"] is not None]
    if adversarial:
        lines.extend([("**Embedding drift**: mean cosine between a cloud's adversarial and clean embedding "
                       "(1 = unmoved)."), "", "| set | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)])
        for s in adversarial:
            lines.append(f"| {s} | " + " | ".join(f"{cell[s, p]['drift']:.3f}" for p in names) + " |")
        lines.append("")
    return "\n".join(lines)
