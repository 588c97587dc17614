"""What ``bench check`` found (:class:`CheckReport`) and the text it prints (:func:`format_report`).

The check itself is :func:`benchmark.api.check.check`; this module holds its result and its
rendering, so the check reads as the steps it takes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["AttackCheck", "CheckReport", "DefenseCheck", "ModelCheck", "format_report"]


@dataclass
class ModelCheck:
    """A model the grid resolved: ``source`` says where its weights came from."""

    name: str
    source: str
    params: int


@dataclass
class DefenseCheck:
    """One defense prepared and run on the batch. ``cost_ratio``: its forward over the victim's;
    ``adaptive_ratio``: a forward and backward through its attackable model (EOT draws included)
    over the victim's; ``memory_mib``: peak CUDA memory of the step (None on CPU)."""

    name: str
    status: str  # ok | failed | skipped
    weights: str = ""  # the weight files it loaded (its path parameters), or empty
    seconds: float = 0.0
    cost_ratio: float = math.nan
    adaptive_ratio: float = math.nan
    randomized: bool = False
    memory_mib: float | None = None


@dataclass
class AttackCheck:
    """One attack run on the batch against the victim. ``passes``: victim passes per cloud at the
    configured settings (an upper bound when ``at_most``); ``batch_seconds``: estimated seconds per
    batch; ``memory_mib``: peak CUDA memory of the step (None on CPU)."""

    name: str
    status: str  # ok | failed | skipped
    passes: float = math.nan
    at_most: bool = False
    batch_seconds: float = math.nan
    memory_mib: float | None = None


@dataclass
class CheckReport:
    """What :func:`check` found. ``problems``: one line each, naming the key or file and the fix;
    empty when everything loads. Seconds are estimates for the whole grid on an empty cache."""

    profile: str
    dataset: str
    device: str
    batch_size: int
    n_test: int
    protocols: list[str]
    train_clouds: int
    models: list[ModelCheck] = field(default_factory=list)
    defenses: list[DefenseCheck] = field(default_factory=list)
    attacks: list[AttackCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)  # configured weight files that are absent
    pass_seconds: float = math.nan  # one forward + backward of the victim on the batch
    forward_seconds: float = math.nan
    surrogate_ratio: float = math.nan
    cells: int = 0
    crafting_seconds: float = math.nan
    evaluation_seconds: float = math.nan
    peak_memory_mib: float = math.nan
    memory_kind: str = "peak RSS"
    seconds: float = 0.0  # the check's own wall time

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def batches(self) -> int:
        return math.ceil(self.n_test / self.batch_size) if self.batch_size else 0


# --------------------------------------------------------------------------- the report as text


def _duration(seconds: float) -> str:
    """``12 s``, ``3.4 min``, ``5.2 h``, ``2.1 d``; a dash for NaN."""
    if math.isnan(seconds):
        return "–"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return "<0.01 s" if seconds < 0.01 else f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"


def _mib(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def format_report(report: CheckReport) -> str:
    """``report`` as the text ``bench check`` prints: models, defenses, attacks, the grid's cost and
    the problems (one line each)."""
    ratio = lambda x: "–" if math.isnan(x) else f"{x:.2f}x"
    lines = [(f"bench check: profile {report.profile}, dataset {report.dataset}, device {report.device}, "
             f"batch {report.batch_size}; the grid: {report.n_test} test clouds ({report.batches} batches), "
             f"protocols {', '.join(report.protocols)}")]
    if report.models:
        lines += ["", "models"] + _table(["model", "parameters", "weights"],
                                         [[m.name, f"{m.params:,}", m.source] for m in report.models])
    if report.defenses:
        lines += ["", f"defenses (one batch; forward cost x the victim's {_duration(report.forward_seconds)})"]
        lines += _table(["defense", "status", "prepared in", "forward cost", "adaptive cost", "randomized", "peak MiB",
                         "weights"],
                        [[d.name, d.status, _duration(d.seconds), ratio(d.cost_ratio), ratio(d.adaptive_ratio),
                          "yes" if d.randomized else "no", _mib(d.memory_mib), d.weights or "–"]
                         for d in report.defenses])
    if report.attacks:
        lines += ["", (f"attacks (victim passes per cloud to craft; one pass = {_duration(report.pass_seconds)} "
                  "per batch; <= : early stop, an upper bound)")]
        lines += _table(["attack", "status", "passes / cloud", "per batch", "per source (grid)", "peak MiB"],
                        [[a.name, a.status, "–" if math.isnan(a.passes) else f"{'<= ' if a.at_most else ''}"
                          f"{a.passes:,.0f}", _duration(a.batch_seconds), _duration(a.batch_seconds * report.batches),
                          _mib(a.memory_mib)] for a in report.attacks])
    if report.cells:
        total = report.crafting_seconds + report.evaluation_seconds
        lines += ["", (f"grid: {len(report.protocols)} protocol(s) x {len(report.defenses)} defenses x "
                  f"({len(report.attacks)} attacks + clean) = {report.cells} cells; estimated on an empty cache from "
                  f"this batch on {report.device}: crafting {_duration(report.crafting_seconds)}, evaluation "
                  f"{_duration(report.evaluation_seconds)}, total {_duration(total)} (training not included)")]
    lines.append(f"memory: {report.memory_kind} {_mib(report.peak_memory_mib)} MiB; check took "
                 f"{_duration(report.seconds)} (trained models and defenses: at most 1 epoch on "
                 f"{report.train_clouds} clouds, in a scratch cache)")
    if report.problems:
        lines += ["", f"problems ({len(report.problems)}):"] + [f"  {p}" for p in report.problems]
    else:
        lines += ["", "ok: every file loads and one batch ran through every defense and attack"]
    return "\n".join(lines)
