"""The HTML leaderboard: one self-contained page with the markdown leaderboard's numbers,
escaped text from the result files, inline robustness curves, and tables that sort in a real
(headless Chromium) browser.

The browser test drives Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``),
with the standard library only. It skips when no Chromium is installed (``apt-get install
chromium-headless-shell`` on Debian; ``.ci/run`` does that) and fails instead when
``PCRB_REQUIRE_BROWSER=1``. ``PCRB_BROWSER`` names a browser binary to use.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from benchmark.core.config import resolve_config
from benchmark.leaderboard import read_runs, render_leaderboard
from benchmark.leaderboard.html import HTML_NOTICE, render_html_leaderboard, sort_value, write_html_leaderboard
from benchmark.store import ResultStore, encode_distances, encode_outcomes

ROOT = Path(__file__).resolve().parents[1]
N = 12
PGD = json.dumps({"budget": 0.08, "norm": "l2", "seed": 0, "steps": 20}, sort_keys=True)
SOR = json.dumps({"alpha": 1.1, "k": 2}, sort_keys=True)

#: (defense, attack, outcomes of the 12 clouds or "failed"). Ranked by the worst case over the
#: strong pgd: srs 5/12, none 3/12, then sor (its drop-100 failed): names and clean accuracy
#: sort in other orders.
CELLS = [
    ("none", "clean", "111111111110"), ("none", "pgd", "111000000000"), ("none", "drop-100", "111110000000"),
    ("none", "fmn", "000000000000"),
    ("sor", "clean", "111111111100"), ("sor", "pgd", "111111000000"), ("sor", "drop-100", "failed"),
    ("sor", "fmn", "111111000000"),
    ("srs", "clean", "111111110000"), ("srs", "pgd", "111110000000"), ("srs", "drop-100", "011111100000"),
    ("srs", "fmn", "111100000000"),
]
ROLES = {"pgd": "strong", "drop-100": "weak", "fmn": "min-norm"}
DISTANCES = [0.05 * (i + 1) for i in range(N)]


def write_fixture(folder: Path, *, victim: str = "pointnet-lite", rename: dict[str, str] | None = None,
                  error: str = "RuntimeError: out of points", pgd_params: str = PGD,
                  roles: dict[str, str] | None = None) -> Path:
    """A results folder as `bench run` leaves it: rows through the store, one run record."""
    rename, roles = rename or {}, {**ROLES, **(roles or {})}
    rows = []
    for defense, attack, outcome in CELLS:
        row = {"dataset": "synthshapes", "profile": "smoke", "protocol": "transfer", "victim": victim,
               "source": "" if attack == "clean" else victim, "defense": rename.get(defense, defense),
               "attack": attack, "seed": 0, "n": N, "defense_params": SOR if defense == "sor" else "{}",
               "attack_params": {"pgd": pgd_params, "drop-100": '{"num_drop": 100}', "fmn": '{"steps": 100}'}.get(
                   attack, ""),
               "attack_role": roles.get(attack, ""), "dataset_fingerprint": "abc123", "victim_hash": "feedbeef" * 4,
               "run_id": "run-1", "pcrb_version": "0.1.0", "device": "cpu",
               "distances": encode_distances(DISTANCES) if attack == "fmn" else ""}
        if outcome == "failed":
            row.update(status="failed", error=error)
        else:
            k = outcome.count("1")
            row.update(status="ok", correct=k, accuracy=k / N, outcomes=encode_outcomes([c == "1" for c in outcome]),
                       attack_success=0.75 if attack != "clean" else None, l2=0.08, chamfer=1e-4, hausdorff=2e-3)
        rows.append(row)
    ResultStore(folder).write(rows)
    config = resolve_config("smoke").to_dict()
    config["limit"] = N
    ResultStore(folder).write_run("run-1", {"run_id": "run-1", "config": config})
    return folder


# ---------------------------------------------------------------------------------------------
# reading the page back
# ---------------------------------------------------------------------------------------------
class Page(HTMLParser):
    """Tags, attributes and table cells of a page (cell text without the folded parameters)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.tables: list[dict[str, Any]] = []  # {"class": ..., "rows": [[cell text, ...], ...], "values": [[...]]}
        self.texts: dict[str, str] = {}  # element id -> text
        self.style = self.script = ""
        self._cell: list[str] | None = None
        self._folded = 0
        self._in: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag in ("style", "script"):
            self._in = tag
        elif tag == "table":
            self.tables.append({"class": a.get("class", ""), "rows": [], "values": []})
        elif tag == "tr" and self.tables and not self._folded:
            self.tables[-1]["rows"].append([])
            self.tables[-1]["values"].append([])
        elif tag in ("td", "th") and self.tables and not self._folded:
            self._cell = []
            self.tables[-1]["values"][-1].append(a.get("data-value"))
        elif tag == "details":
            self._folded += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._in = None
        elif tag == "details":
            self._folded -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.style += data
        elif self._in == "script":
            self.script += data
        elif self._cell is not None and not self._folded:
            self._cell.append(data)

    def ranking(self, index: int = 0) -> list[list[str]]:
        return [t for t in self.tables if "ranking" in t["class"]][index]["rows"]


def markdown_rankings(text: str) -> list[list[list[str]]]:
    """The ranking table of every section of a markdown leaderboard, as cell texts."""
    out, table = [], None
    for line in text.splitlines():
        if line.startswith("| rank |"):
            table = []
            out.append(table)
        if table is not None and line.startswith("| "):
            table.append([re.sub(r"^\*\*(.*)\*\*$", r"\1", c.strip()) for c in line.strip().strip("|").split(" | ")])
        elif table is not None and not line.startswith("|"):
            table = None
    return out


def both(results: Path) -> tuple[str, str]:
    """(markdown, html) of one results folder, rendered from the same rows."""
    frame, runs = ResultStore(results).read(), read_runs(results)
    return render_leaderboard(frame, runs), render_html_leaderboard(frame, runs)


# ---------------------------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------------------------
def test_the_page_is_one_document_that_loads_nothing_from_elsewhere(tmp_path):
    text = write_html_leaderboard(write_fixture(tmp_path / "results"), tmp_path / "lb.html").read_text("utf-8")
    assert text.startswith("<!DOCTYPE html>\n" + HTML_NOTICE + "\n")
    page = Page(text)
    names = [tag for tag, _ in page.tags]
    assert names.count("style") == 1 and names.count("script") == 1
    assert not {"link", "img", "iframe", "object", "embed", "base", "form"} & set(names)
    for tag, attrs in page.tags:
        assert "src" not in attrs and attrs.get("href", "#").startswith("#"), (tag, attrs)
    assert "url(" not in page.style and "@import" not in page.style
    csp = next(a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")

    def sha(code: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"

    assert "default-src 'none'" in csp and sha(page.style) in csp and sha(page.script) in csp


def test_same_rows_give_the_same_bytes_whatever_the_order_they_were_written_in(tmp_path):
    first = write_html_leaderboard(write_fixture(tmp_path / "a"), tmp_path / "a.html").read_bytes()
    store = ResultStore(tmp_path / "b")
    rows = ResultStore(write_fixture(tmp_path / "c")).read().to_dict("records")
    store.write(reversed(rows))
    (tmp_path / "b" / "runs").mkdir()
    shutil.copy(tmp_path / "c" / "runs" / "run-1.json", tmp_path / "b" / "runs" / "run-1.json")
    assert write_html_leaderboard(tmp_path / "b", tmp_path / "b.html").read_bytes() == first


def test_bench_leaderboard_html_writes_the_page_beside_the_markdown(tmp_path, capsys):
    from benchmark.cli import main

    results = write_fixture(tmp_path / "results")
    md, page = tmp_path / "lb.md", tmp_path / "lb.html"
    assert main(["leaderboard", "--results", str(results), "--out", str(md), "--html", str(page)]) == 0
    assert page.read_bytes() == write_html_leaderboard(results, tmp_path / "again.html").read_bytes()
    assert md.exists() and str(page) in capsys.readouterr().out


def test_a_missing_results_folder_names_the_fix_and_an_empty_one_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `bench run` first"):
        write_html_leaderboard(tmp_path / "nowhere", tmp_path / "lb.html")
    (tmp_path / "empty").mkdir()
    assert "No results yet" in write_html_leaderboard(tmp_path / "empty", tmp_path / "lb.html").read_text("utf-8")


# ---------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------
def test_every_ranking_cell_equals_the_markdown_leaderboards(tmp_path):
    markdown, text = both(write_fixture(tmp_path / "results"))
    expected = markdown_rankings(markdown)[0]
    got = [row[:-1] for row in Page(text).ranking()]  # the last column folds the parameters
    assert got == expected
    assert [row[1] for row in got[1:]] == ["srs", "none", "sor"]
    assert got[0][-3:] == ["pgd", "drop-100", "fmn"]  # strong, weak, then minimum-norm attacks


def test_the_committed_results_render_with_the_markdown_leaderboards_numbers():
    markdown, text = both(ROOT / "results")
    page = Page(text)
    expected = markdown_rankings(markdown)
    assert expected, "the committed results have no ranking table"
    assert [[row[:-1] for row in page.ranking(i)] for i in range(len(expected))] == expected


def test_each_cell_sorts_by_the_number_it_shows(tmp_path):
    assert sort_value("83.2 [78.1, 87.4]*") == "83.2" and sort_value("60.0 [31.3, 83.2] †") == "60.0"
    assert sort_value("+3.9 (p=0.002)*") == "3.9" and sort_value("-1.2 (p=0.5)") == "-1.2"
    assert sort_value("∞") == "Infinity" and sort_value("–") == "" and sort_value("failed") == ""
    _, text = both(write_fixture(tmp_path / "results"))
    table = next(t for t in Page(text).tables if "ranking" in t["class"])
    for row, values in zip(table["rows"][1:], table["values"][1:]):
        for cell, value in zip(row, values):
            if value is not None:
                assert value == sort_value(cell), (cell, value)


def test_every_accuracy_interval_is_drawn_where_its_numbers_say(tmp_path):
    _, text = both(write_fixture(tmp_path / "results"))
    # none's clean cell: 11 of 12, Wilson 95% interval [64.6, 98.5]
    assert "91.7 [64.6, 98.5]" in text
    assert '<rect class="span" x="64.6" y="1" width="33.9" height="6"/>' in text
    assert '<rect class="point" x="90.95" y="0"' in text


# ---------------------------------------------------------------------------------------------
# curves, parameters, reproduce command
# ---------------------------------------------------------------------------------------------
def test_the_robustness_curve_steps_down_at_the_stored_minimal_distances(tmp_path):
    markdown, text = both(write_fixture(tmp_path / "results"))
    paths = dict(re.findall(r'<path class="curve [^"]*" data-defense="([^"]+)" d="([^"]+)"', text))
    assert list(paths) == ["srs", "none", "sor"]  # legend in ranking order
    # none is fooled by every minimal example: a step down at each of the 12 distances within the axis
    # (the axis ends at 1.1 x the 98th percentile) to 0%; sor resists 6 of them: it never falls below 50%
    assert paths["none"].count("V") == 11 and paths["none"].endswith("V290.00H620.00")
    ys = [float(v) for v in re.findall(r"V([\d.]+)", paths["sor"])]
    assert max(ys) == pytest.approx(290 - 276 * 0.5)
    medians = {row[1]: row[5] for row in markdown_rankings(markdown)[0][1:]}
    for defense, median in medians.items():
        assert f"{defense} (median {median})</li>" in text


def test_each_row_shows_its_parameters_and_each_section_its_reproduce_command(tmp_path):
    markdown, text = both(write_fixture(tmp_path / "results"))
    command = next(line.strip() for line in markdown.splitlines() if line.strip().startswith("bench run "))
    assert f'<pre class="cmd"><code>{command}</code></pre>' in text
    assert '<pre>{\n  &quot;alpha&quot;: 1.1,\n  &quot;k&quot;: 2\n}</pre>' in text  # sor's row
    assert '<pre>{\n  &quot;budget&quot;: 0.08,\n  &quot;norm&quot;: &quot;l2&quot;' in text  # the pgd attack
    assert "<code>abc123</code>" in text and "<code>feedbeeffeedbeef</code>" in text
    assert "<code>sor</code> × <code>drop-100</code>: RuntimeError: out of points" in text


# ---------------------------------------------------------------------------------------------
# escaping
# ---------------------------------------------------------------------------------------------
HOSTILE_DEFENSE = "<img src=x onerror=alert(1)>"
HOSTILE_VICTIM = '"><script>alert(2)</script>'
HOSTILE_ERROR = "</li><script>alert('3')</script> & more"
HOSTILE_PARAMS = json.dumps({"note": "</pre><script>alert(4)</script>"})
HOSTILE_ROLE = '" onmouseover="alert(5)'


def test_text_from_the_result_files_is_escaped_everywhere(tmp_path):
    results = write_fixture(tmp_path / "results", victim=HOSTILE_VICTIM, rename={"srs": HOSTILE_DEFENSE},
                            error=HOSTILE_ERROR, pgd_params=HOSTILE_PARAMS, roles={"drop-100": HOSTILE_ROLE})
    text = write_html_leaderboard(results, tmp_path / "lb.html").read_text("utf-8")
    page = Page(text)
    assert [t for t, _ in page.tags].count("script") == 1 and "img" not in [t for t, _ in page.tags]
    assert all(not k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert "alert" not in page.script
    for raw in (HOSTILE_DEFENSE, HOSTILE_VICTIM, HOSTILE_ERROR, "</pre><script>", HOSTILE_ROLE):
        assert raw not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;/li&gt;&lt;script&gt;alert(&#x27;3&#x27;)&lt;/script&gt; &amp; more" in text
    assert page.ranking()[1][1] == HOSTILE_DEFENSE  # shown as the text it is


# ---------------------------------------------------------------------------------------------
# a real browser
# ---------------------------------------------------------------------------------------------
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    named = os.environ.get("PCRB_BROWSER")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of the child)."""

    def __init__(self, binary: str, profile: Path, log: Path, timeout: float = 15.0) -> None:
        self.timeout, self.events, self._id, self._buffer = timeout, [], 0, b""
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # the browser reads our commands on its fd 3 and writes its replies on its fd 4
        wire = ("import os, sys; read, write = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2])); "
                "os.dup2(read, 3); os.dup2(write, 4); os.set_inheritable(3, True); os.set_inheritable(4, True); "
                "os.execv(sys.argv[3], sys.argv[3:])")
        self.process = subprocess.Popen(
            [sys.executable, "-c", wire, str(to_browser), str(from_browser), binary, "--headless", "--no-sandbox",
             "--disable-gpu", "--no-first-run", "--disable-extensions", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--window-size=1400,900", "about:blank"],
            pass_fds=(to_browser, from_browser), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=log.open("w"))
        os.close(to_browser)
        os.close(from_browser)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=self.session)

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if not select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed the pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._message(deadline))

    def open(self, path: Path) -> None:
        self.events.clear()
        self.send("Page.navigate", session=self.session, url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real left click (mouse down and up) at the middle of the element ``selector``."""
        box = self.evaluate(f"(function () {{ var e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); var r = e.getBoundingClientRect(); "
                            "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=self.session, type=kind, x=box[0], y=box[1],
                      button="left", clickCount=1)

    def errors(self) -> list[str]:
        """Every script exception, console error and error-level log entry since the last ``open``."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(json.dumps(params.get("args", []))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(params["entry"].get("text", "")[:500])
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def browser(tmp_path):
    binary = find_browser()
    if binary is None:
        if os.environ.get("PCRB_REQUIRE_BROWSER") == "1":
            pytest.fail("PCRB_REQUIRE_BROWSER=1 but no Chromium found (apt-get install chromium-headless-shell)")
        pytest.skip("no headless Chromium here (apt-get install chromium-headless-shell, or set PCRB_BROWSER)")
    chromium = Chromium(binary, tmp_path / "profile", tmp_path / "browser.log")
    yield chromium
    chromium.close()


ROWS = "Array.from(document.querySelectorAll('table.ranking tbody tr')).map(r => r.cells[1].textContent)"


def test_clicking_a_header_sorts_its_table_in_a_headless_browser_without_a_script_error(tmp_path, browser):
    page = write_html_leaderboard(write_fixture(tmp_path / "results"), tmp_path / "lb.html")
    browser.open(page)
    assert browser.evaluate(ROWS) == ["srs", "none", "sor"]  # the leaderboard's ranking
    browser.click("table.ranking th[data-type] button")  # "rank" is the first header: ascending = as ranked
    browser.click("table.ranking thead th:nth-child(2)")  # defense: by name
    assert browser.evaluate(ROWS) == ["none", "sor", "srs"]
    assert browser.evaluate("document.querySelector('table.ranking thead th:nth-child(2)')"
                            ".getAttribute('aria-sort')") == "ascending"
    browser.click("table.ranking thead th:nth-child(7)")  # clean accuracy: best first, then reversed
    assert browser.evaluate("document.querySelector('table.ranking thead th:nth-child(7)').textContent") == "clean"
    assert browser.evaluate(ROWS) == ["none", "sor", "srs"]  # 91.7, 83.3, 66.7
    browser.click("table.ranking thead th:nth-child(7)")
    assert browser.evaluate(ROWS) == ["srs", "sor", "none"]
    browser.click("table.ranking thead th:nth-child(9)")  # drop-100: sor's failed cell sorts last both ways
    assert browser.evaluate(ROWS)[-1] == "sor"
    browser.click("table.ranking thead th:nth-child(9)")
    assert browser.evaluate(ROWS)[-1] == "sor"
    assert browser.errors() == []


def test_the_pages_security_policy_blocks_a_script_that_is_not_its_own(tmp_path, browser):
    page = write_html_leaderboard(write_fixture(tmp_path / "results"), tmp_path / "lb.html")
    tampered = tmp_path / "tampered.html"
    tampered.write_text(page.read_text("utf-8").replace("</body>", "<script>document.title = 'ran';</script></body>"),
                        "utf-8")
    browser.open(tampered)
    assert browser.evaluate("document.title") == "PCRB leaderboard"
    assert any("Content Security Policy" in e for e in browser.errors())  # and the check above would see it
