"""The benchmarks page, generated from the benchmarks' JSON output.

Two sources, both committed under ``docs/benchmarks/``:

- ``<name>.json``: a run of the benchmark made by ``python docs/run_benchmarks.py`` (the
  command, the date, the machine, the load before and after, the commit, and the JSON the
  benchmark wrote, unchanged);
- ``recorded.json``: the figures earlier rounds measured and wrote into the README by hand,
  each with the commit that recorded it.

The build (``docs/hooks.py``) calls :func:`benchmark_page`; nothing on the page is typed in by
hand.

    python docs/gen_benchmarks.py        # print the page's Markdown
"""
from __future__ import annotations

import json
from pathlib import Path

DIR = Path(__file__).resolve().parent / "benchmarks"

# name -> (title, the full-size command, what it measures and why)
SECTIONS: dict[str, tuple[str, str, str]] = {
    "speed": ("Backtest, inference, training, memory and the DQN",
              "python runners/bench.py",
              "The regime-LSTM backtest against a no-model SMA cross on the same feed, "
              "inference latency and throughput of every architecture, training throughput "
              "against a bare PyTorch loop, peak memory, and the DQN's training env steps/s "
              "(goal >= 500 on 2 cores). See the [bench guide](guides/bench.md)."),
    "portfolio": ("The portfolio backtest of several markets",
                  "python runners/bench.py --markets 16",
                  "The portfolio backtest of 1, 4 and 16 copies of BTCUSDT and ETHUSDT 4h in one "
                  "Backtrader run against the one-market backtest: wall and CPU time, their "
                  "ratios (target: N markets <= N x 1.2 the one-market time) and the peak "
                  "memory of a fresh process. See the "
                  "[portfolio backtest guide](guides/portfolio-backtest.md)."),
    "truth": ("Known truth: the synthetic market",
              "python runners/bench_truth.py",
              "Regime classifiers' balanced accuracy against the true regimes, and each "
              "model's R² against the oracle forecast's. Targets: regime LSTM R² >= 0.8 x the "
              "oracle's; default classifier >= 0.85 balanced accuracy."),
    "download": ("Downloader",
                 "python benchmarks/bench_download.py",
                 "A full BTCUSDT 4h history and a no-op update, each a fresh process, against "
                 "a local Binance mirror. Targets: full history <= 10 s on 2 cores; a no-op "
                 "update <= 1 s plus interpreter start."),
    "tune": ("Tuning",
             "python benchmarks/bench_tune.py --csv ../shared/data/BTCUSDT_4h.csv --trials 60 "
             "--jobs 2",
             "Wall time, trials and trials per minute of the pooled and regime studies, with "
             "and without pruning."),
    "live": ("Live paper trading and the model server",
             "python benchmarks/bench_live.py",
             "Latency from a closed candle to its committed decision, in-process and through "
             "the model server; the server's throughput under wrk; memory over many candles. "
             "Goals: p99 <= 30 ms in-process, <= 60 ms through HTTP, >= 200 requests/s."),
    "bus": ("Live scale-out over Redis Streams",
            "python benchmarks/bench_bus.py",
            "Latency from a candle's XADD to its committed decision, 10 markets, 1 and 2 "
            "engines, in bursts and one candle at a time. Goal: p99 <= 50 ms on 2 cores."),
    "skillmap": ("The skill map",
                 "python benchmarks/bench_skillmap.py --symbols BTCUSDT,ETHUSDT --data-dir "
                 "../shared/data --start 2019-01-01 --jobs 2",
                 "Wall time of a whole skill map, of each cell, and cells per hour, on real "
                 "markets; the verdict of the map. See the [skill map guide](guides/skillmap.md)."),
}
SKIP = {"config", "space", "rss_samples_mb", "all_runs", "notes", "argv"}


def _fmt(value) -> str:
    """A figure as text: floats to four significant digits (whole above 1,000), lists joined."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def flatten(obj, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, value)`` for every figure of a benchmark's JSON (long lists skipped)."""
    rows: list[tuple[str, str]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key not in SKIP:
                rows += flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        for i, value in enumerate(obj):
            rows += flatten(value, f"{prefix}[{i}]")
    elif isinstance(obj, list):
        if len(obj) <= 6 and all(not isinstance(v, (dict, list)) for v in obj):
            rows.append((prefix, _fmt(obj)))
    elif obj is not None:
        rows.append((prefix, _fmt(obj)))
    return rows


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def measured(name: str) -> list[str]:
    """The section of this snapshot's run of ``name``, or why there is none."""
    path = DIR / f"{name}.json"
    if not path.is_file():
        return ["Not measured in this snapshot: run `python docs/run_benchmarks.py "
                f"{name}` to add it.", ""]
    rec = json.loads(path.read_text())
    m = rec["machine"]
    before, after = rec["load_average_before"], rec["load_average_after"]
    out = [f"Run `{rec['command']}` on {rec['started_utc'].replace('T', ' ')} "
           f"(commit `{rec['git_commit']}`), {rec['wall_s']} s wall; machine: {m['cores']} "
           f"cores, {m['cpu'] or 'CPU model unknown'}, {m['platform']}, Python {m['python']}; "
           f"load average (1 / 5 / 15 min) {' / '.join(map(str, before))} before, "
           f"{' / '.join(map(str, after))} after. "
           + ("At full size" if rec.get("size") == "full" else
              "A small size, to show the benchmark's output")
           + f": the [JSON]({path.relative_to(DIR.parent).as_posix()}) holds every figure.",
           "", "| figure | value |", "|---|---|"]
    out += [f"| `{_cell(k)}` | {_cell(v)} |" for k, v in flatten(rec["result"])]
    return out + [""]


def recorded(name: str, entries: list[dict]) -> list[str]:
    """The hand-recorded figures of earlier rounds for ``name``."""
    if not entries:
        return []
    out = ["### Recorded by hand in earlier rounds", "",
           "Copied unchanged from the README of the commit named; no JSON of these runs was "
           "kept.", ""]
    for e in entries:
        out += [f"**{_cell(e['title'])}**: `{_cell(e['command'])}`, commit `{e['commit']}` "
                f"({e['date']}); machine: {_cell(e['machine'])}; load average: "
                f"{_cell(e['load'])}.", "",
                "| " + " | ".join(map(_cell, e["columns"])) + " |",
                "|" + "---|" * len(e["columns"])]
        out += ["| " + " | ".join(map(_cell, row)) + " |" for row in e["rows"]]
        out += ["", _cell(e["note"]), ""] if e.get("note") else [""]
    return out


def benchmark_page() -> str:
    """The Markdown of ``benchmarks.md``."""
    hand = json.loads((DIR / "recorded.json").read_text())
    out = ["# Benchmarks", "",
           "Speed is measured by benchmark scripts that write JSON, never asserted in tests. "
           "This page is generated when the site is built, from the JSON committed in "
           "`docs/benchmarks/`: a small run of each benchmark made by "
           "`python docs/run_benchmarks.py` (with its command, date, machine and load), and "
           "the figures earlier rounds recorded by hand. Timings on 2 shared cores move with "
           "the load; compare figures only at a similar load.", ""]
    for name, (title, command, what) in SECTIONS.items():
        out += [f"## {title}", "", what, "", f"Full size: `{command}`.", "",
                "### Measured for this snapshot", ""]
        out += measured(name)
        out += recorded(name, hand.get(name, []))
    return "\n".join(out)


if __name__ == "__main__":
    print(benchmark_page())
