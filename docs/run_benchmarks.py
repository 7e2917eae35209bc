"""Run the benchmarks at a small size and keep their JSON for the docs' benchmarks page.

    python docs/run_benchmarks.py                  # every benchmark below (about 15 min)
    python docs/run_benchmarks.py download bus     # only these

Each benchmark runs exactly as its own command (the ``command`` below, in a fresh process,
with the working tree's code); its JSON output is stored in ``docs/benchmarks/<name>.json``
inside a record of when it ran (UTC), how long it took, the machine (cores, CPU model,
platform, Python), the load average before and after, and the git commit. The page
``benchmarks.md`` is generated from these files by ``docs/gen_benchmarks.py`` when the site is
built. The sizes here are small so that a docs refresh stays affordable on 2 shared cores;
each benchmark's full-size command is on the page.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "benchmarks"

# name -> (command, with {out} for the JSON path; what it measures, in one line)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "download": ("python benchmarks/bench_download.py --reps 1 --out {out}",
                 "the downloader against a local Binance mirror: full history, no-op update"),
    "truth": ("python runners/bench_truth.py --bars 3000 --quiet --out {out}",
              "the known-truth benchmark on a 3,000-bar synthetic market"),
    "speed": ("python runners/bench.py --reps 1 --train-epochs 1 --skip-rerun "
              "--dqn-steps 500 --out {out}",
              "backtest, inference, training, memory and DQN speed (runners/bench.py)"),
    "portfolio": ("python runners/bench.py --markets 16 --reps 3 --out {out}",
                  "the portfolio backtest of 1, 4, 16 markets against the one-market backtest"),
    "live": ("python benchmarks/bench_live.py --candles 200 --memory-candles 400 --tiny "
             "--wrk-seconds 5 --out {out}",
             "live paper trading latency, model-server throughput, memory"),
    "bus": ("python benchmarks/bench_bus.py --rounds 50 --single-rounds 10 --tiny --out {out}",
            "the Redis Streams pipeline: candle XADD to committed decision"),
    "tune": ("python benchmarks/bench_tune.py --trials 4 --epochs 5 --jobs 1 --out {out}",
             "tuning speed with and without pruning (SAMPLE market)"),
}


def machine() -> dict:
    """Cores, CPU model, platform and Python of this machine."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "python": platform.python_version()}


def git_commit() -> str:
    """The working tree's commit (empty outside a git checkout)."""
    res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                         capture_output=True)
    return res.stdout.strip()


def run_one(name: str) -> dict:
    """Run one benchmark; return its record (the JSON it wrote under ``result``)."""
    command, what = BENCHMARKS[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        argv = command.format(out=out)
        load_before = os.getloadavg()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        t0 = time.perf_counter()
        res = subprocess.run(argv, shell=True, cwd=REPO, text=True, capture_output=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        wall = time.perf_counter() - t0
        if res.returncode != 0 or not out.is_file():
            raise SystemExit(f"{name}: {argv} failed:\n{res.stderr[-2000:]}")
        result = json.loads(out.read_text())
    return {"benchmark": name, "what": what,
            "command": command.format(out=f"docs/benchmarks/{name}.json"),
            "started_utc": started, "wall_s": round(wall, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "machine": machine(), "git_commit": git_commit(), "result": result}


def main(names: list[str]) -> int:
    """Run the named benchmarks (all by default), one after another."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or list(BENCHMARKS):
        record = run_one(name)
        (OUT / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{name}: {record['wall_s']} s, load {record['load_average_before'][0]} -> "
              f"{record['load_average_after'][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
