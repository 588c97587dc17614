"""The README sections the committed results fill (``bench docs``): the default grid's
rankings under the transfer and adaptive protocols, and how each attack does on ``none``.

Importing this module registers them with ``benchmark.docs.register_section``;
``import benchmark.leaderboard`` does (``bench docs`` imports it).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from benchmark.docs import markdown_table, number, percent, register_section
from benchmark.leaderboard.cells import finite, pct
from benchmark.leaderboard.ranking import attack_roles, rank_defenses
from benchmark.leaderboard.sections import sections
from benchmark.store import CLEAN, ResultStore, with_labels

__all__ = ["grid_attacks", "leaderboard_adaptive", "leaderboard_headline", "leaderboard_rows"]


def leaderboard_rows(results_dir: str | os.PathLike[str], *, dataset: str, profile: str,
                     protocol: str) -> list[dict[str, str]]:
    """The ranking of one section (the first matching one, by the leaderboard's order) as
    rows of text cells: rank, defense, worst case, vs none, avg robust, median min L2, clean."""
    frame = ResultStore(results_dir).read()
    if frame.empty:
        return []
    for section, rows in sections(with_labels(frame)).items():
        if (section.dataset, section.profile, section.protocol) != (dataset, profile, protocol):
            continue
        rows = rows.reset_index(drop=True)
        roles = attack_roles(rows)
        attacks = sorted({str(a) for a in rows["attack"] if a != CLEAN})
        strong = any(roles.get(a) == "strong" for a in attacks)
        out = []
        for rank, s in enumerate(rank_defenses(rows, attacks, roles), 1):
            mean = pct(s.mean) + ("" if s.complete else " †") if finite(s.mean) else "–"
            out.append({"rank": str(rank), "defense": s.defense,
                        ("worst case (strong)" if strong else "worst case"): s.worst, "vs none": s.versus_none,
                        "avg robust": mean, "median min L2": s.median, "clean": s.cells[CLEAN]})
        return out
    return []



def _readme_ranking(root: Path, protocol: str) -> str:
    rows = leaderboard_rows(root / "results", dataset="synthshapes", profile="default", protocol=protocol)
    if not rows:
        return (f"No committed `default` results under the {protocol} protocol yet: run "
                f"`bench run --protocol {protocol} --defense all --attack all`.\n")
    return "\n".join(markdown_table(rows)) + "\n"


@register_section("leaderboard-headline")
def leaderboard_headline(root: Path) -> str:
    """The transfer section's ranking of the committed default grid (``results/synthshapes.csv``)."""
    return _readme_ranking(root, "transfer")


@register_section("leaderboard-adaptive")
def leaderboard_adaptive(root: Path) -> str:
    """The adaptive section's ranking of the committed default grid (``results/synthshapes.csv``)."""
    return _readme_ranking(root, "adaptive")


@register_section("grid-attacks")
def grid_attacks(root: Path) -> str:
    """Per attack of the committed default transfer grid: role, success on the undefended
    victim by the attack's own rule, the victim's accuracy and the crafting seconds."""
    frame = ResultStore(root / "results").read()
    if frame.empty:
        return "No committed `default` results yet: run `bench run --defense all --attack all`.\n"
    keep = ((frame["dataset"] == "synthshapes") & (frame["profile"] == "default") & (frame["protocol"] == "transfer")
            & (frame["defense"] == "none") & (frame["status"] == "ok") & (frame["attack"] != CLEAN))
    for column in ("defense_variant", "attack_variant"):
        if column in frame.columns:
            keep &= frame[column].fillna("").astype(str) == ""
    rows = frame[keep]
    if rows.empty:
        return "No committed `default` transfer rows for `none` yet.\n"
    entries = [{"attack": str(r["attack"]), "role": str(r.get("attack_role", "") or ""),
                "success": number(r["attack_success"]), "accuracy": number(r["accuracy"]),
                "seconds": number(r["seconds_attack"])} for _, r in rows.iterrows()]
    order = {"strong": 0, "min-norm": 1, "weak": 2}
    entries.sort(key=lambda e: (order.get(e["role"], 3), -(0.0 if math.isnan(e["success"]) else e["success"]), e["attack"]))
    table = [{"attack": f"`{e['attack']}`", "role": e["role"], "success on `none`": percent(e["success"]),
              "`none` accuracy": percent(e["accuracy"]), "crafting seconds": f"{e['seconds']:.0f}"} for e in entries]
    short = [f"`{e['attack']}` ({percent(e['success'])})" for e in entries
             if e["role"] == "strong" and not math.isnan(e["success"]) and e["success"] < 0.9]
    lines = [(f"From `results/synthshapes.csv` (default profile, transfer, n = {int(rows['n'].iloc[0])}, "
             "the undefended victim; success by each attack's own rule):"), "", *markdown_table(table), "",
             "These rows carry no attack roles (written before roles existed)."
             if not any(e["role"] for e in entries) else
             "Every strong attack reaches 90% success on `none`." if not short else
             f"Strong attacks below the 90% bar on `none`: {', '.join(short)}."]
    return "\n".join(lines) + "\n"
