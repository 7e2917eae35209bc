"""Run the worked examples of the command guides and write their real output.

    python docs/gen_examples.py                 # every example (about 10 minutes on 2 cores)
    python docs/gen_examples.py backtest tune   # only these

Each example runs, in order, in one fresh folder (so `evaluate` reuses the models that
`backtest` trained there), with the working tree's code (``PYTHONPATH``) and ``bt-lstm`` on the
``PATH``. Its commands and everything they printed (stdout and stderr) go to
``docs/examples/<name>.txt``, headed by the date, the machine and its load; the guides include
those files as they are. Sizes are small on purpose (the SAMPLE market; the tests' tiny
network where the default one would take minutes), so the figures show what the output looks
like, never what the method is worth.
"""
from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "examples"
TINY = "--lookback 8 --hidden-size 4 --epochs 2 --patience 2 --min-regime-windows 20 --quiet"
SAMPLE_CSV = ("python -c \"from bt_lstm.data.synthetic import make_market; "
              "make_market().frame.to_csv('sample.csv', index_label='timestamp')\"")
REDIS = os.environ.get("BT_LSTM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# the bus example's keys are removed afterwards (hidden step, not in the transcript)
CLEAN_BUS = ("!python -c \"import redis; r = redis.Redis.from_url('" + REDIS + "'); "
             "[r.delete(k) for k in r.scan_iter(match='docs-example:*')]\"")

# name -> steps; a step is a shell command, "&" + command (started in the background and
# stopped when the example ends), "!" + command (run, not shown) or "wait <url>" (poll until
# the URL answers, not shown).
EXAMPLES: dict[str, list[str]] = {
    # before `download`, which writes data/BTCUSDT_4h.csv: this one reads the bundled snapshot
    "getting-started": ["bt-lstm backtest --symbol BTCUSDT --quiet"],
    "backtest": ["bt-lstm backtest --quiet"],
    "evaluate": ["bt-lstm evaluate --quiet"],
    "walk-forward": ["bt-lstm walk-forward --train-bars 2190 --test-bars 1000 --jobs 2 "
                     "--no-tearsheet --quiet"],
    "lookahead": ["bt-lstm lookahead --cuts 5 --quiet"],
    "tune": [f"bt-lstm tune --trials 3 {TINY} --study docs-example"],
    "dqn": ["bt-lstm dqn --qnet dense --timesteps 2000 --eval-every 1000 --learning-starts 200 "
            "--no-regime-lstm --no-tearsheet --quiet"],
    "bench-truth": ["bt-lstm bench-truth --bars 3000 --quiet"],
    "download": ["&python mirror.py",
                 "wait http://127.0.0.1:8765/api/v3/ping",
                 "bt-lstm download --symbol BTCUSDT --timeframe 4h --start 2025-06-01 "
                 "--end 2025-12-01 --base-url http://127.0.0.1:8765 --quiet",
                 "bt-lstm download --symbol BTCUSDT --timeframe 4h --end 2025-12-01 "
                 "--base-url http://127.0.0.1:8765 --quiet",
                 "head -3 data/BTCUSDT_4h.csv"],
    "live": [SAMPLE_CSV,
             f"bt-lstm backtest --csv sample.csv {TINY} --no-skill trade --no-tearsheet "
             ">/dev/null",
             "&bt-lstm serve --models models/sample_4h --port 8765 --no-skill trade --quiet",
             "wait http://127.0.0.1:8765/health/ready",
             "curl -s http://127.0.0.1:8765/v1/model",
             "&bt-lstm replay --csv sample.csv --start 2023-12-01 --port 9765 --speed 50 --quiet",
             "wait http://127.0.0.1:9765/api/v3/klines?symbol=BTCUSDT&interval=4h&limit=1",
             "bt-lstm live --symbol BTCUSDT --timeframe 4h --model-server http://127.0.0.1:8765 "
             "--ws-url ws://127.0.0.1:9765 --rest-url http://127.0.0.1:9765 --no-skill trade "
             "--state live/BTCUSDT_4h --stop-after 40 --quiet",
             "head -3 live/BTCUSDT_4h/decisions.csv"],
    "bus": [CLEAN_BUS, SAMPLE_CSV,
            f"bt-lstm backtest --csv sample.csv {TINY} --no-skill trade --no-tearsheet >/dev/null",
            "mkdir -p bundles && cp -r models/sample_4h bundles/BTCUSDT_4h",
            "&bt-lstm replay --csv sample.csv --start 2023-12-01 --port 9766 --speed 50 --quiet",
            "wait http://127.0.0.1:9766/api/v3/klines?symbol=BTCUSDT&interval=4h&limit=1",
            f"&bt-lstm live --bus {REDIS} --bus-prefix docs-example: --role ingest "
            "--symbol BTCUSDT --timeframe 4h --ws-url ws://127.0.0.1:9766 "
            "--rest-url http://127.0.0.1:9766 --stop-after 30 --quiet",
            f"&bt-lstm live --bus {REDIS} --bus-prefix docs-example: --role engine "
            "--models-root bundles --no-skill trade --stop-after 30 --quiet",
            f"bt-lstm live --bus {REDIS} --bus-prefix docs-example: --role decide "
            "--state bus-state --no-skill trade --stop-after 30 --quiet",
            f"bt-lstm live --bus {REDIS} --bus-prefix docs-example: --status", CLEAN_BUS],
}

MIRROR = '''\
import time
from bt_lstm.data.download.mirror import KlineMirror
from bt_lstm.data.snapshot import find_snapshot, load_snapshot

frame = load_snapshot(find_snapshot("BTCUSDT", "4h"))
values = frame[["open", "high", "low", "close", "volume"]].to_numpy()
rows = [(int(t), *map(float, v)) for t, v in zip(frame.index.as_unit("ms").asi8, values)]
with KlineMirror({"BTCUSDT": {"4h": rows}}, port=8765):
    time.sleep(600)
'''


def header(name: str) -> str:
    """The lines that say how an example's output was made."""
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"# made by `python docs/gen_examples.py {name}` on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.system()} "
            f"{platform.machine()}, {os.cpu_count()} cores, load average {load}\n")


def wait_for(url: str, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 2xx (a server started in the background is ready)."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.time() > deadline:
                raise SystemExit(f"{url} did not answer in {timeout:.0f} s") from None
            time.sleep(0.3)


def run_example(name: str, work: Path, env: dict) -> str:
    """Run one example's steps in ``work``; return the transcript."""
    lines, background = [header(name)], []
    try:
        for step in EXAMPLES[name]:
            if step.startswith("wait "):
                wait_for(step[5:])
                continue
            if step.startswith("!"):
                subprocess.run(step[1:], shell=True, cwd=work, env=env, check=True,
                               capture_output=True)
                continue
            if step.startswith("&"):
                if "mirror.py" in step:  # a stand-in for data.binance.vision, not shown
                    (work / "mirror.py").write_text(MIRROR)
                else:
                    lines.append(f"$ {step[1:]} &\n")
                background.append(subprocess.Popen(step[1:], shell=True, cwd=work, env=env,
                                                   stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
                continue
            res = subprocess.run(step, shell=True, cwd=work, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            shown = step.replace(" >/dev/null", "")
            text = "" if ">/dev/null" in step else res.stdout.replace(str(work), ".").replace(
                f"{REPO}/", "")
            lines.append(f"$ {shown}\n{text}" + ("" if text.endswith("\n") or not text else "\n"))
            if res.returncode != 0:
                lines.append(f"(exit code {res.returncode})\n")
    finally:
        for proc in background:
            os.killpg(proc.pid, 15)
            proc.wait(30)
    return "".join(lines)


def main(names: list[str]) -> int:
    """Run the named examples (all by default) in one temporary folder."""
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        print(f"unknown example {unknown[0]!r}; known: {', '.join(EXAMPLES)}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bt-lstm-docs-") as tmp:
        work, bin_dir = Path(tmp) / "work", Path(tmp) / "bin"
        work.mkdir()
        bin_dir.mkdir()
        shim = bin_dir / "bt-lstm"
        shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m bt_lstm.cli \"$@\"\n")
        shim.chmod(0o755)
        env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{bin_dir}:{os.environ['PATH']}",
                   BT_LSTM_DATA_DIR=str(work / "data"))
        for name in names or list(EXAMPLES):
            t0 = time.time()
            text = run_example(name, work, env)
            (OUT / f"{name}.txt").write_text(text)
            print(f"{name}: {time.time() - t0:.0f} s -> {OUT / (name + '.txt')}")
        shutil.rmtree(work / "live", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
