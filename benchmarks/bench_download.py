"""Speed of the downloader against a local Binance mirror (127.0.0.1) serving the bundled
BTCUSDT 4h candles in the archive layout: a full-history download and a no-op incremental
update, each as the user runs it (``python runners/download.py ...`` in a fresh process).

    python benchmarks/bench_download.py                    # writes reports/bench_download.json
    python benchmarks/bench_download.py --reps 5 --out /tmp/bench.json

Targets (issue 12): full history <= 10 s on 2 cores; a no-op update <= 1 s plus interpreter
start. Measured here, never asserted in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bt_lstm.data.candles import load_ohlcv  # noqa: E402
from bt_lstm.data.download.mirror import KlineMirror  # noqa: E402
from bt_lstm.data.snapshot import find_snapshot, load_snapshot  # noqa: E402


def timed(argv: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {res.stderr.strip()[-500:]}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="repetitions per figure (3)")
    ap.add_argument("--out", default="reports/bench_download.json", help="where the JSON goes")
    args = ap.parse_args()
    frame = load_snapshot(find_snapshot("BTCUSDT", "4h"))
    values = frame[["open", "high", "low", "close", "volume"]].to_numpy()
    rows = [(int(t), *map(float, v)) for t, v in zip(frame.index.as_unit("ms").asi8, values)]
    figures: dict = {}
    with KlineMirror({"BTCUSDT": {"4h": rows}}) as mirror, tempfile.TemporaryDirectory() as tmp:
        base = ["runners/download.py", "--symbol", "BTCUSDT", "--timeframe", "4h",
                "--base-url", mirror.url, "--quiet"]
        timed([*base, "--data-dir", f"{tmp}/warm"])  # the mirror builds and caches its zips
        full, noop, noop_end = [], [], []
        for rep in range(args.reps):
            folder = f"{tmp}/rep{rep}"
            full.append(timed([*base, "--data-dir", folder]))
            noop.append(timed([*base, "--data-dir", folder]))
            noop_end.append(timed([*base, "--data-dir", folder, "--end", "2025-12-02"]))
        got = load_ohlcv(Path(folder) / "BTCUSDT_4h.csv")
        start = [timed(["-c", "pass"]) for _ in range(args.reps)]
        imports = [timed(["-c", "import bt_lstm.cli.download, bt_lstm.data.download, tqdm"])
                   for _ in range(args.reps)]
        n_requests = len(mirror.requests)
    figures = {
        "full_history_s": statistics.median(full),
        "noop_update_s": statistics.median(noop),
        "noop_update_to_data_end_s": statistics.median(noop_end),
        "interpreter_start_s": statistics.median(start),
        "interpreter_and_imports_s": statistics.median(imports),
        "noop_update_minus_interpreter_s": statistics.median(noop) - statistics.median(start),
        "all_runs": {"full_history_s": full, "noop_update_s": noop,
                     "noop_update_to_data_end_s": noop_end},
        "notes": ("full history and noop_update: no --end, so every month from 2017-01 to today "
                  "is asked for; the mirror's candles end 2025-12-02, so the months after it "
                  "(and last month's and this month's daily files) are 404s, as on a mirror "
                  "that lags. noop_update_to_data_end: --end 2025-12-02, only the stored last "
                  "candle's month is fetched again."),
        "rows": len(got), "identical_to_snapshot": bool(got.equals(frame)),
        "requests_served": n_requests,
        "targets": {"full_history_s": 10.0, "noop_update_minus_interpreter_s": 1.0},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    for key in ("full_history_s", "noop_update_s", "noop_update_to_data_end_s",
                "interpreter_start_s",
                "interpreter_and_imports_s", "noop_update_minus_interpreter_s"):
        print(f"{key:34s} {figures[key]:7.2f}")
    print(f"rows {len(got)}, identical to the snapshot: {figures['identical_to_snapshot']}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
