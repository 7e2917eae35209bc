"""The HTML tearsheet agrees with the terminal and metrics.json; a flat run's page explains it;
runs keep their own folders, listed in reports/index.html; pages render in headless Chromium."""
from __future__ import annotations

import contextlib
import io
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import TINY_FLAGS, chromium_evaluate, need_chromium

from bt_lstm.backtest.reports import SUMMARY_ROWS, _fmt
from runners import backtest as runner


class Tables(HTMLParser):
    """Every table of a page as rows of cell texts, and every <img>'s attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(page: str) -> Tables:
    p = Tables()
    p.feed(page)
    return p


def terminal_rows(out: str) -> dict[str, tuple[str, str]]:
    """The summary table the terminal printed: label -> (strategy, buy-and-hold) cells."""
    rows = {}
    for label, _, _ in SUMMARY_ROWS:
        line = next(ln for ln in out.splitlines() if ln.startswith(label))
        cells = re.split(r"\s{2,}", line[22:].strip())
        rows[label] = (cells[0], cells[1])
    return rows


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory):
    """Two SAMPLE runs into one reports folder: trading (--no-skill trade) and flat
    (--threshold 1: above every forecast), with the terminal's output of each."""
    tmp = tmp_path_factory.mktemp("reports")
    outs = {}
    for name, extra in (("traded", ["--no-skill", "trade"]), ("flat", ["--threshold", "1"])):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = runner.main([*TINY_FLAGS, "--models-dir", str(tmp / "models"),
                              "--reports-dir", str(tmp / "reports"), *extra])
        assert rc == 0
        group = tmp / "reports" / "backtest_SAMPLE_4h"
        outs[name] = ((group / "latest").resolve(), buf.getvalue())
        time.sleep(1.1)  # the next run gets the next second's stamp
    return tmp / "reports", outs


def test_sample_tearsheet_figures_and_dates_equal_metrics_and_terminal(sample_runs):
    _, outs = sample_runs
    folder, out = outs["traded"]
    metrics = json.loads((folder / "metrics.json").read_text())
    page = (folder / "tearsheet.html").read_text()
    per = metrics["period"]
    # the page's span is the terminal's: the whole test span, not from the first trade
    assert f"Test span {per['start']} to {per['end']}" in page
    assert f"{per['start']} -> {per['end']}" in out
    assert metrics["strategy"]["trades"] > 0
    (summary,) = [t for t in parse(page).tables if t and t[0] == ["", "Strategy",
                                                                  "Buy & hold"]]
    shown = {row[0]: (row[1], row[2]) for row in summary[1:]}
    term = terminal_rows(out)
    for label, key, kind in SUMMARY_ROWS:
        b = metrics["buy_and_hold"].get(key)
        expected = (_fmt(metrics["strategy"].get(key), kind), "-" if b is None else _fmt(b, kind))
        assert shown[label] == term[label] == expected, label
    for key in ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "volatility",
                "exposure"):
        assert metrics["buy_and_hold"][key] is not None, key  # buy-and-hold's figures shown
    # no annualised rows longer than the test, no month outside it
    assert not re.search(r"\b(3Y|5Y|10Y)\b", page)
    months = [t for t in parse(page).tables if t and "Jan" in t[0]]
    start, end = per["start"][:7], per["end"][:7]
    names = months[0][0]
    for table in months:
        for row in table[1:]:
            for col, cell in enumerate(row[1:13], start=1):
                when = f"{row[0]}-{col:02d}"
                assert bool(cell) == (start <= when <= end), (names[col], row[0], cell)


def test_flat_run_page_explains_it_and_terminal_says_why(sample_runs):
    _, outs = sample_runs
    folder, out = outs["flat"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["strategy"]["trades"] == 0
    (line,) = [ln for ln in out.splitlines() if ln.startswith("no trades:")]
    skill = metrics["skill"]
    flat_all = all(skill[r]["route"].startswith("flat") for r in ("bearish", "sideways",
                                                                  "bullish"))
    assert ("skill guard" in line) == (not flat_all or "--no-skill trade" in line)
    assert "--threshold 1" in line or flat_all  # the threshold is named when it stopped trades
    page = (folder / "tearsheet.html").read_text()
    tables = parse(page)
    skill_rows = [t for t in tables.tables if t and t[0][:3] == ["regime", "model",
                                                                 "val MSE / zero"]]
    assert [r[0] for r in skill_rows[0][1:]] == ["bearish", "sideways", "bullish"]
    alts = {img.get("alt") for img in tables.images}
    assert {"equity: strategy and buy-and-hold", "forecasts and the threshold",
            "validation loss curves"} <= alts
    assert "--no-skill trade" in page and "walk-forward" in page and "tune" in page


def test_two_runs_keep_two_folders_listed_in_the_index(sample_runs):
    reports, outs = sample_runs
    group = reports / "backtest_SAMPLE_4h"
    runs = sorted(p for p in group.iterdir() if p.name != "latest")
    assert len(runs) == 2 and (group / "latest").resolve() == outs["flat"][0]
    index = (reports / "index.html").read_text()
    for folder in runs:
        assert f"backtest_SAMPLE_4h/{folder.name}/tearsheet.html" in index
    rows = [r for t in parse(index).tables for r in t[1:]]
    assert len(rows) == 2 and {r[7] for r in rows} == {
        str(json.loads((f / "metrics.json").read_text())["strategy"]["trades"]) for f in runs}


CHECK_IMAGES = """
(async () => {
  if (document.readyState !== "complete")
    await new Promise(r => window.addEventListener("load", r));
  return JSON.stringify(Array.from(document.images).map(img => {
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    let coloured = 0;
    if (img.naturalWidth) {
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) {
        const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
        if (hi - lo > 60) coloured++;
      }
    }
    return {alt: img.alt, complete: img.complete, width: img.naturalWidth, coloured};
  }));
})()
"""


def chromium_images(page: Path, profile: Path) -> list[dict]:
    """Every image of ``page`` in headless Chromium: loaded or broken, and its coloured (data,
    not axes) pixels drawn on a canvas."""
    return chromium_evaluate(page, profile, CHECK_IMAGES)


def test_both_pages_open_in_chromium_with_no_broken_image_nor_empty_chart(sample_runs,
                                                                        tmp_path):
    need_chromium()
    _, outs = sample_runs
    for name in ("traded", "flat"):
        images = chromium_images(outs[name][0] / "tearsheet.html", tmp_path / name)
        assert len(images) >= 4, (name, images)
        for img in images:
            assert img["complete"] and img["width"] > 0, (name, img)  # not broken
            assert img["coloured"] > 200, (name, img)  # data drawn, not empty axes


def test_walk_forward_runs_are_grouped_and_resume_finds_the_newest(market_csv, tmp_path,
                                                                   capsys):
    from runners import walk_forward as wf_runner

    reports = tmp_path / "reports"
    args = ["--csv", str(market_csv), "--train-bars", "400", "--test-bars", "400", *TINY_FLAGS,
            "--no-tearsheet", "--reports-dir", str(reports)]
    assert wf_runner.main(args) == 0
    group = reports / "wf_candles_4h"
    (run_dir,) = [p for p in group.iterdir() if p.name != "latest"]
    assert (group / "latest").resolve() == run_dir.resolve()
    assert f"wf_candles_4h/{run_dir.name}/index.html" in (reports / "index.html").read_text()
    capsys.readouterr()
    assert wf_runner.main(["--resume", "wf_candles_4h", "--reports-dir", str(reports),
                           "--quiet"]) == 0  # the group: its newest run
    captured = capsys.readouterr()
    assert "already trained are reused" in captured.err and str(run_dir) in captured.out
    assert [p.name for p in group.iterdir() if p.name != "latest"] == [run_dir.name]


def test_tune_page_has_tables_one_plotly_script_and_stays_small(market_csv, tmp_path):
    from runners import tune as tune_runner

    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"type": "float", "low": 0.001, "high": 0.01,
                                        "log": True},
                                 "hidden_size": {"type": "categorical", "choices": [4, 8]}}))
    reports = tmp_path / "reports"
    assert tune_runner.main(["--csv", str(market_csv), *TINY_FLAGS, "--space", str(space),
                             "--trials", "10", "--reports-dir", str(reports)]) == 0
    (folder,) = list(reports.glob("tune_*"))
    page = (folder / "index.html").read_text()
    assert (folder / "plotly.min.js").stat().st_size > 100_000  # offline, once per folder
    assert page.count("<script src='plotly.min.js'>") == 1 and "cdn.plot.ly" not in page
    assert len(page.encode()) < 1_000_000
    assert "with fewer than 20 the importances are mostly noise" in page
    tables = parse(page).tables
    assert any(t[0][:3] == ["MSE ratio to zero", "threshold", "validation Sharpe"]
               for t in tables)
    assert "{&quot;" not in page and '{"' not in page.split("<h3>")[0]  # no raw JSON
    assert f"{folder.name}/index.html" in (reports / "index.html").read_text()
