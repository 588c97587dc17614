"""``bench ablate <defense>``: the defense once per variant of its switches, as one result table.

A defense class declares its ablations as ``ablations`` (a class attribute): variant name ->
``Ablation(changes, what, paper)``, ``changes`` being parameter overrides on top of the run's
own parameters for that defense (profile < ``--config`` < ``--set defenses.<name>.*``). The
first variant is the full method. ``bench ablate`` (``benchmark.cli``) evaluates every
variant as its own defense column (``<defense>`` for the full method, ``<defense>-<variant>``
for the others) beside ``none``, by the ordinary :class:`benchmark.runner.Runner`: cached training (keyed by the variant's
parameters), resumable cells, the same attacks and test clouds. Rows go to
``<out>/ablations/<defense>/<dataset>.csv``; :func:`ablation_markdown` renders the table
(clean, mean and worst-case robust accuracy, the change in mean robust accuracy vs the full
method, and the paper's number where it gives one) into ``ablation.md`` next to it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.core.params import Ablation

__all__ = ["Ablation", "ablation_dir", "ablation_markdown", "ablation_summary", "column_name", "format_p",
           "mechanism_markdown",
           "per_cloud", "same_as_full", "variants_of"]


def variants_of(defense: str, select: Sequence[str] | None = None) -> dict[str, Ablation]:
    """The declared ablations of the registered ``defense`` (all, or the ``select``ed names in
    their declared order; the full method is always kept first).

    Raises:
        ValueError: the defense declares no ablations, or an unknown variant is selected.
    """
    from benchmark.core.registry import DEFENSES

    declared: Mapping[str, Ablation] = getattr(DEFENSES.get(defense).obj, "ablations", None) or {}
    if not declared:
        with_ablations = sorted(n for n in DEFENSES.names() if getattr(DEFENSES.get(n).obj, "ablations", None))
        raise ValueError(f"defense {defense!r} declares no ablations; defenses with ablations: "
                         f"{', '.join(with_ablations) or 'none'}")
    if not select:
        return dict(declared)
    unknown = [v for v in select if v not in declared]
    if unknown:
        raise ValueError(f"unknown {defense} ablation(s) {unknown}; choose from: {', '.join(declared)}")
    full = next(iter(declared))
    return {k: v for k, v in declared.items() if k == full or k in select}


def same_as_full(params: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The variants whose parameters equal the full method's (``params``: variant -> the built
    defense's ``params()``, the full method first): under this run's settings they change nothing,
    e.g. ``adv-mix-0.5`` where the profile already sets ``adv_mix: 0.5``."""
    full, *others = params
    return [name for name in others if dict(params[name]) == dict(params[full])]


def column_name(defense: str, variant: str, full: str) -> str:
    """The results' defense column of a variant: the defense itself for the full method."""
    return defense if variant == full else f"{defense}-{variant}"


def per_cloud(rows: pd.DataFrame, defense: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """For the defense column ``defense`` of one protocol's rows: per cloud, the share of the
    bounded attacks it survives (whose mean is the mean robust accuracy) and whether it survives
    clean and every attack (strong ones when the rows name any): ``(scores, survived)``, None
    where the outcomes are missing."""
    from benchmark.store import decode_outcomes

    mine = rows[(rows["defense"] == defense) & (rows["status"] == "ok")]
    roles = mine["attack_role"].fillna("").astype(str) if "attack_role" in mine.columns else pd.Series("", index=mine.index)
    attacked = mine[(mine["attack"] != "clean") & (roles != "min-norm")]
    outcomes = {a: decode_outcomes(o) for a, o in zip(attacked["attack"], attacked["outcomes"]) if isinstance(o, str) and o}
    clean = mine[mine["attack"] == "clean"]["outcomes"]
    if not outcomes or clean.empty or not isinstance(clean.iloc[-1], str):
        return None, None
    strong = set(attacked.loc[roles.loc[attacked.index] == "strong", "attack"])
    kept = [v for a, v in outcomes.items() if a in strong] if strong else list(outcomes.values())
    scores = np.mean(np.stack(list(outcomes.values())), axis=0)
    survived = np.logical_and.reduce([decode_outcomes(clean.iloc[-1]), *kept])
    return scores, survived


def run_wide(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """``rows`` with a variant label that every row shares blanked (a run-wide setting such as
    ``--set datasets.synthshapes.test_size=1024`` labels every column alike, so it tells the
    columns nothing), and that label (``""`` if none)."""
    shared = ""
    out = rows
    for column in ("defense_variant", "attack_variant"):
        if column in rows.columns and len(rows):
            values = rows[column].fillna("").astype(str)
            if values.nunique() == 1 and values.iloc[0]:
                shared = "; ".join(v for v in (shared, values.iloc[0]) if v)
                out = out.assign(**{column: ""})
    return out, shared


def ablation_summary(rows: pd.DataFrame, defense: str, variants: Mapping[str, Ablation],
                     control: str | None = None) -> pd.DataFrame:
    """One row per variant (and ``none``, and the ``control`` defense) of one protocol's results:
    clean, mean and worst-case robust accuracy (percent), the change in mean vs the full method
    with paired p-values on the same clouds (sign-flip permutation test of the per-cloud share
    of attacks survived; exact McNemar of the worst case: ``benchmark.stats``), the same two
    p-values against ``control`` (``p mean control`` / ``p worst control``; e.g. ``prompt-at``,
    MRPD without teachers), the paper's number."""
    from benchmark.stats import mcnemar, paired_permutation
    from benchmark.store import summary_table

    rows, _ = run_wide(rows)
    table = summary_table(rows)
    if table.empty:
        return pd.DataFrame()
    full = next(iter(variants))
    columns = {"none": ("none", Ablation(what="no defense"))}
    if control:
        columns[control] = (control, Ablation(what=f"matched control: {defense} without its teachers"))
    columns.update({column_name(defense, k, full): (k, v) for k, v in variants.items()})
    robust = "mean over attacks" in table.index
    worst_row = "worst case (strong)" if "worst case (strong)" in table.index else "worst case"
    reference = table.get(defense)
    full_scores, full_survived = per_cloud(rows, defense)
    control_scores, control_survived = per_cloud(rows, control) if control else (None, None)
    out = []
    for column, (variant, ablation) in columns.items():
        if column not in table.columns:
            continue
        values = table[column]
        mean = float(values["mean over attacks"]) if robust else np.nan
        scores, survived = per_cloud(rows, column)
        compare = column != defense and scores is not None and full_scores is not None \
            and scores.shape == full_scores.shape
        against_control = column not in (control, "none") and scores is not None and control_scores is not None \
            and scores.shape == control_scores.shape
        out.append({
            "variant": variant, "defense": column, "what": ablation.what,
            "changes": ", ".join(f"{k}={_fmt(v)}" for k, v in ablation.changes.items()) or "-",
            "clean": float(values.get("clean", np.nan)), "mean robust": mean,
            "worst case": float(values[worst_row]) if robust else np.nan,
            "delta mean": (mean - float(reference["mean over attacks"])) if (robust and reference is not None
                                                                            and column != "none") else np.nan,
            "p mean": paired_permutation(scores, full_scores).p_value if compare else np.nan,
            "p worst": mcnemar(survived, full_survived).p_value if compare else np.nan,
            "p mean control": paired_permutation(scores, control_scores).p_value if against_control else np.nan,
            "p worst control": mcnemar(survived, control_survived).p_value if against_control else np.nan,
            "paper mean": ablation.paper if ablation.paper is not None else np.nan,
        })
    return pd.DataFrame(out)


def format_p(value: float) -> str:
    """A p-value for the tables: ``<0.001``, else two significant digits; ``*`` below 0.05; ``-`` for NaN."""
    if math.isnan(value):
        return "-"
    return ("<0.001" if value < 0.001 else f"{value:.2g}") + ("*" if value < 0.05 else "")


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _cell(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def ablation_markdown(rows: pd.DataFrame, defense: str, variants: Mapping[str, Ablation],
                      title: str = "", control: str | None = None) -> str:
    """The ablation table(s) as markdown, one per protocol, deterministic for the same rows."""
    ok, shared = run_wide(rows[rows["status"] == "ok"])
    lines = [f"# {title or f'{defense} ablations'}", ""]
    if ok.empty:
        return "\n".join([*lines, "No finished results.", ""])
    first = ok.iloc[0]
    attacks = sorted(a for a in set(ok["attack"]) if a != "clean")
    lines += [f"Dataset `{first['dataset']}`, profile `{first['profile']}`"
              + (f" with `{shared}`" if shared else "") + f", victim `{first['victim']}`, "
              f"n = {int(first['n'])} test clouds, attacks: {', '.join(attacks)}. Accuracy in percent; "
              "'mean robust' is the mean over the attacks, 'worst case' the share of clouds that survive every "
              "(strong) attack, 'delta' the change in mean robust accuracy against the full method; 'p mean' and "
              "'p worst' test that change and the worst case's against the full method on the same clouds "
              "(paired: sign-flip permutation test of each cloud's share of attacks survived; exact McNemar); "
              + (f"'vs {control}' gives the same two p-values against `{control}`, the matched control "
                 f"({defense} without its teachers); " if control else "") +
              "`*` marks p < 0.05. 'paper' is the MRPD paper's ModelNet40 number for the same variant (real data, "
              "EVA02 teachers): compare directions, not values.", ""]
    for protocol, part in ok.groupby("protocol", sort=False):
        summary = ablation_summary(part, defense, variants, control)
        if summary.empty:
            continue
        vs = f" p mean vs {control} | p worst vs {control} |" if control else ""
        lines += [f"## {protocol}", "",
                  "| variant | what | changes | clean | mean robust | worst case | delta | p mean | p worst |" + vs
                  + " paper |", "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if control else "")
                  + "---:|"]
        for _, r in summary.iterrows():
            cells = f" {format_p(r['p mean control'])} | {format_p(r['p worst control'])} |" if control else ""
            lines.append(f"| {r['variant']} | {r['what']} | {r['changes']} | {_cell(r['clean'])} | "
                         f"{_cell(r['mean robust'])} | {_cell(r['worst case'])} | {_cell(r['delta mean'], True)} | "
                         f"{format_p(r['p mean'])} | {format_p(r['p worst'])} |{cells} {_cell(r['paper mean'])} |")
        lines.append("")
    return "\n".join(lines)


def _verdict(delta: float, p: float, alpha: float = 0.05) -> str:
    """What removing a mechanism did: ``delta`` = (with it) - (without it), tested at ``alpha``."""
    if math.isnan(p) or math.isnan(delta):
        return "not measured"
    if p < alpha:
        return "helps" if delta > 0 else "hurts"
    return "no detectable effect"


def mechanism_markdown(rows: pd.DataFrame, defense: str, variants: Mapping[str, Ablation],
                       mechanisms: Mapping[str, str], control: str | None = None, protocol: str = "transfer") -> str:
    """Per mechanism, what the full method gains by it: the full method minus the variant that
    removes it (``mechanisms``: mechanism -> variant name), in mean and worst-case robust accuracy
    and clean accuracy (points), the paired p-values on the same clouds, and a verdict at
    p < 0.05 (``helps`` / ``hurts`` / ``no detectable effect``). With ``control``, one more line:
    all teachers together (the full method against its matched control)."""
    ok = rows[(rows["status"] == "ok") & (rows["protocol"] == protocol)]
    summary = ablation_summary(ok, defense, variants, control) if not ok.empty else pd.DataFrame()
    if summary.empty:
        return f"No finished {protocol} ablation of {defense} yet: run `bench ablate {defense}`.\n"
    by = summary.set_index("variant")
    full = next(iter(variants))
    if full not in by.index:
        return f"The {protocol} ablation of {defense} lacks the full method.\n"
    n = int(ok["n"].iloc[0])
    intro = (f"{defense}, {protocol} protocol, n = {n} test clouds: each line compares the full method with the "
             "variant lacking one mechanism, on the same clouds ('gain' = full minus variant, in points; positive: "
             "the mechanism helps). p: paired sign-flip permutation test of each cloud's share of attacks survived "
             "(mean) and exact McNemar (worst case).")
    lines = [intro, "",
             "| mechanism | removed by | gain mean robust | p | gain worst case | p | gain clean | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    entries = [(m, v, v) for m, v in mechanisms.items()]
    if control:
        entries.append(("all teachers (vs matched control)", control, control))
    for mechanism, variant, key in entries:
        if key not in by.index:
            lines.append(f"| {mechanism} | `{variant}` | - | - | - | - | - | not run |")
            continue
        r = by.loc[key]
        if key == control:
            p_mean, p_worst = by.loc[full, "p mean control"], by.loc[full, "p worst control"]
        else:
            p_mean, p_worst = r["p mean"], r["p worst"]
        gain = {c: float(by.loc[full, c]) - float(r[c]) for c in ("mean robust", "worst case", "clean")}
        verdict = _verdict(gain["mean robust"], p_mean)
        lines.append(f"| {mechanism} | `{variant}` | {_cell(gain['mean robust'], True)} | {format_p(p_mean)} | "
                     f"{_cell(gain['worst case'], True)} | {format_p(p_worst)} | {_cell(gain['clean'], True)} | {verdict} |")
    return "\n".join(lines) + "\n"


def ablation_dir(out_dir: str | Path, defense: str) -> Path:
    """Where ``bench ablate <defense>`` writes: ``<out>/ablations/<defense>``."""
    return Path(out_dir) / "ablations" / defense
