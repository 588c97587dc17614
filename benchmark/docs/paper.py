"""The paper-scale section (docs/paper-scale.md): the MRPD paper's reported accuracies beside the
ones PCRB's `paper` runs wrote.

The paper's numbers come from ``benchmark/docs/paper_reference.yaml`` (transcribed from the paper,
PROTOCOL.md section 6); PCRB's from the results store (``results/<dataset>.csv`` and
``results/ablations/mrpd/<dataset>.csv``): rows of profile ``paper``, run at the profile's own
settings (no variant label), status ok; where several runs hold a cell, the one on the most test
clouds, then the newest. A cell no run has filled shows a dash.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from benchmark.docs.render import markdown_table, register_section

REFERENCE = Path("benchmark") / "docs" / "paper_reference.yaml"


def _accuracies(root: Path, folder: Path, dataset: str, protocol: str) -> dict[tuple[str, str], float]:
    """``(defense, attack) -> accuracy %`` of the `paper` rows in ``root/folder/<dataset>.csv``."""
    from benchmark.store import ResultStore

    rows = ResultStore(root / folder).read(dataset)
    if rows.empty:
        return {}
    keep = ((rows["profile"] == "paper") & (rows["protocol"] == protocol) & (rows["status"] == "ok")
            & (rows["defense_variant"].fillna("") == "") & (rows["attack_variant"].fillna("") == "")
            & (rows["shard"].fillna("").astype(str) == ""))
    rows = rows[keep].sort_values(["n", "timestamp"])
    return {(r.defense, r.attack): 100 * float(r.accuracy) for r in rows.itertuples()}


def _cell(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.2f}"


def _average(measured: dict[tuple[str, str], float], defense: str, attacks: list[str]) -> float | None:
    values = [measured.get((defense, a)) for a in attacks]
    return None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type]


def _table(rows: list[dict[str, Any]], measured: dict[tuple[str, str], float], columns: list[str],
           attacks: list[str]) -> list[str]:
    """Each paper row, then one PCRB row per defense it corresponds to."""
    out = []
    for row in rows:
        out.append({"defense": row["paper"], "from": "paper", **{c: _cell(row.get(c)) for c in columns}})
        for name in row["pcrb"] if isinstance(row["pcrb"], list) else [row["pcrb"]]:
            values = {c: measured.get((name, "clean" if c == "clean" else c)) for c in columns if c != "avg"}
            values["avg"] = _average(measured, name, attacks)
            out.append({"defense": f"`{name}`", "from": "PCRB", **{c: _cell(values.get(c)) for c in columns}})
    return markdown_table(out)


@register_section("paper-reference")
def paper_reference(root: Path) -> str:
    """The paper's Tables 1-2 (ModelNet40, ScanObjectNN, ablations) with PCRB's `paper` rows beside them."""
    path = root / REFERENCE
    if not path.exists():
        return f"No reference numbers: `{REFERENCE}` is missing.\n"
    ref = yaml.safe_load(path.read_text())
    attacks: list[str] = ref["attacks"]
    mn40, scan = ref["modelnet40"], ref["scanobjectnn"]
    measured = _accuracies(root, Path("results"), "modelnet40", mn40["protocol"])
    scanned = _accuracies(root, Path("results"), "scanobjectnn", mn40["protocol"])
    ablated = _accuracies(root, Path("results") / "ablations" / "mrpd", "modelnet40", mn40["protocol"])
    lines = [f"Accuracy (%) from {ref['source']} (`{REFERENCE}`), each paper row followed by the PCRB defense(s) it "
             f"corresponds to, filled from the committed results of profile `paper` ({mn40['protocol']} protocol; "
             f"`avg`: the mean over the paper's attacks). "
             + ("" if measured or scanned or ablated else
                "No committed `paper` results yet: the PCRB rows fill in when `bench run --profile paper` and "
                "`bench ablate mrpd --profile paper` write to `results/` and `bench docs` runs."),
             "", "ModelNet40:", ""]
    lines += _table(mn40["rows"], measured, ["clean", *attacks, "avg"], attacks)
    lines += ["", f"ScanObjectNN ({scan['variant'].upper()}, {scan['num_points']} points per cloud):", ""]
    lines += _table(scan["rows"], scanned, ["clean", "avg"], attacks)
    lines += ["", "MRPD ablations on ModelNet40 (`bench ablate mrpd`), average over the attacks:", ""]
    lines += _table([{**a, "pcrb": [a["pcrb"]]} for a in ref["ablations"]], ablated, ["avg"], attacks)
    return "\n".join(lines) + "\n"
