"""Generated README sections (``benchmark.docs``): rendered from the files the code writes, and
the committed README must match them (a number typed by hand would drift)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.docs import check_docs, render_sections, write_docs

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_documents_match_their_sources():
    assert check_docs(ROOT) == [], "run `bench docs` and commit the result"


def _project(tmp_path: Path) -> Path:
    (tmp_path / "benchmarks").mkdir()
    rows = [{"attack": "cw", "which": "before", "params": {"num_iter": 50}, "success": 0.5, "seconds": 10.0,
             "role": "strong"},
            {"attack": "cw", "which": "after", "params": {"num_iter": 300, "early_stop": True}, "success": 0.9,
             "seconds": 12.0, "role": "strong"}]
    (tmp_path / "benchmarks" / "attack_presets_default.json").write_text(json.dumps({
        "rows": rows, "num_clouds": 8, "victim": "v", "victim_score": "test accuracy 90.0%", "device": "cpu",
        "batch_size": 4, "threads": 2, "total_seconds": {"before": 10.0, "after": 12.0},
        "total_seconds_shared_attacks_after": 12.0}))
    (tmp_path / "README.md").write_text("# t\n<!-- begin generated: attack-presets -->\nstale 99%\n"
                                        "<!-- end generated: attack-presets -->\ntail\n")
    return tmp_path


def test_a_section_is_rewritten_from_its_file_and_drift_is_reported(tmp_path):
    root = _project(tmp_path)
    assert check_docs(root) == ["README.md"]
    assert write_docs(root) == ["README.md"]
    text = (root / "README.md").read_text()
    assert "stale" not in text and "| `cw` | strong | num_iter 50 | 50.0% | 10 | num_iter 300, early_stop True | 90.0% | 12 |" in text
    assert text.endswith("<!-- end generated: attack-presets -->\ntail\n") and check_docs(root) == []


def test_an_unknown_section_name_is_an_error(tmp_path):
    with pytest.raises(KeyError, match="unknown generated section"):
        render_sections("<!-- begin generated: nope -->\nx\n<!-- end generated: nope -->", tmp_path)
