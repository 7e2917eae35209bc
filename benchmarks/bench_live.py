"""Speed of live paper trading on a synthetic market, replayed through the replay server over
WebSocket + REST exactly as ``runners/live.py`` consumes it:

- latency from a closed-candle message received to its decision committed (SQLite transaction,
  CSV lines, status.json), median and p99 over ``--candles`` candles, with forecasts in-process
  and through the model server (``runners/serve.py`` in its own process);
- model-server throughput: ``POST /v1/forecast`` with 500-candle bodies under ``wrk`` (Debian's
  HTTP load generator, a Lua script supplies the body) against ``serve.py --workers
  --server-workers`` (2: one per core), requests/s, its latency figures, and the server's CPU
  time per request (all its processes, from /proc: the figure that holds on a shared machine,
  where requests/s depends on what else runs);
- memory: RSS at the start and the end of ``--memory-candles`` replayed candles (in-process).

    python benchmarks/bench_live.py                          # writes reports/bench_live.json
    python benchmarks/bench_live.py --candles 500 --memory-candles 2000 --out /tmp/b.json

Goals (issue 14): p99 <= 30 ms in-process and <= 60 ms through HTTP on 2 cores; >= 200
requests/s; memory flat. Measured here, never asserted in tests.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bt_lstm.config import StrategyConfig  # noqa: E402
from bt_lstm.data.synthetic import make_market  # noqa: E402
from bt_lstm.live.feed import FeedConfig, KlineFeed  # noqa: E402
from bt_lstm.live.klines import candles_of, timeframe_ms  # noqa: E402
from bt_lstm.live.replay import ReplayConfig, ReplayServer  # noqa: E402
from bt_lstm.live.run import build_engine  # noqa: E402

BAR_MS = timeframe_ms("4h")
STOP_MARGIN = 10  # candles the replay serves beyond those the feed is asked to decide


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replay:
    """The replay server on an event loop of its own thread."""

    def __init__(self, candles: list, start: int, stop: int, speed: float) -> None:
        self.server = ReplayServer(candles, ReplayConfig("BTCUSDT", "4h", BAR_MS, start,
                                                         speed=speed, stop_index=stop))
        self.loop = asyncio.new_event_loop()
        self.stop = None
        self.thread = threading.Thread(target=self._go, daemon=True)
        self.thread.start()
        while not self.server.port:
            time.sleep(0.01)

    def _go(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.stop = asyncio.Event()
        fut = self.loop.create_future()
        self.loop.run_until_complete(self.server.serve_forever("127.0.0.1", 0, fut, self.stop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def train_bundle(root: Path, n_bars: int, flags: list[str]) -> Path:
    from runners import backtest as backtest_runner

    csv = root / "train.csv"
    frame = make_market(n_bars=n_bars, seed=7).frame
    frame.index = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(csv, index_label="timestamp")
    rc = backtest_runner.main(["--csv", str(csv), *flags, "--models-dir", str(root / "models"),
                               "--reports-dir", str(root / "reports"), "--no-skill", "trade",
                               "--no-tearsheet", "--quiet"])
    if rc != 0:
        raise SystemExit("training the benchmark bundle failed")
    return next(p.parent for p in (root / "models").rglob("manifest.json"))


def replay_run(candles: list, start: int, n: int, state: Path, speed: float,
               models: str | None = None, server: str | None = None,
               every: int = 0) -> dict:
    """Replay ``n`` candles from ``start``; latencies (ms) and RSS samples (MB)."""
    # a few candles beyond n: on a loaded machine the first candle can land in the history
    # instead of being decided, and the feed would then wait forever for its n-th decision
    replay = Replay(candles, start, start + n + STOP_MARGIN, speed)
    url = f"127.0.0.1:{replay.server.port}"
    engine = build_engine("BTCUSDT", "4h", StrategyConfig(), state, models=models,
                          model_server=server, no_skill="trade")
    feed = KlineFeed(engine, FeedConfig("BTCUSDT", "4h", BAR_MS, ws_url=f"ws://{url}",
                                        rest_url=f"http://{url}", backoff_s=0.05,
                                        stop_after=n))
    samples: list[tuple[int, float]] = []
    if every:
        orig = engine.on_closed
        seen = [0]  # closed candles handled so far (the sample's x-axis)

        def on_closed(c):
            out = orig(c)
            seen[0] += 1
            if seen[0] == 1 or seen[0] % every == 0:
                samples.append((seen[0], round(rss_mb(), 1)))
            return out

        engine.on_closed = on_closed
    t0 = time.perf_counter()
    print(f"replaying {n} candles ({'server' if server else 'in-process'})", file=sys.stderr)
    try:
        asyncio.run(feed.run())
    finally:
        engine.close()
        replay.close()
    lat = np.array(feed.latencies) * 1000
    return {"candles": int(engine.acct["bars"]), "latencies_measured": int(lat.size),
            "wall_s": round(time.perf_counter() - t0, 1),
            "median_ms": round(float(np.median(lat)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "max_ms": round(float(lat.max()), 2), "rss_samples_mb": samples}


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its children (uvicorn's workers)."""
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    ticks = sum(cpu for p, (ppid, cpu) in stats.items() if p == pid or ppid == pid)
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk_throughput(url: str, body: bytes, seconds: int, threads: int, conns: int,
                   server_pid: int | None = None) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"error": "wrk not installed (Debian: apt-get install -y wrk)"}
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        lua = Path(tmp) / "post.lua"
        lua.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'local f = io.open("{body_file}", "rb")\n'
            "wrk.body = f:read(\"*a\")\nf:close()\n"
            "done = function(summary, latency, requests)\n"
            '  io.write(string.format("JSON {\\"p50_ms\\": %.2f, \\"p99_ms\\": %.2f, '
            '\\"non2xx\\": %d}\\n", latency:percentile(50) / 1000, '
            "latency:percentile(99) / 1000, summary.errors.status))\nend\n")
        cmd = [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(lua),
               f"{url}/v1/forecast"]
        cpu0 = tree_cpu_s(server_pid) if server_pid else None
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
        cpu1 = tree_cpu_s(server_pid) if server_pid else None
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    extra = re.search(r"JSON (\{.*\})", out)
    res = {"command": " ".join(cmd[:5]) + " -s post.lua URL", "body_candles": 500,
           "body_bytes": len(body), "requests_per_s": float(rps.group(1)) if rps else None}
    if done and int(done.group(1)) and cpu0 is not None:
        res["server_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1000 / int(done.group(1)), 2)
    if extra:
        res.update(json.loads(extra.group(1)))
    return res


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candles", type=int, default=2000, help="latency candles (2000)")
    ap.add_argument("--memory-candles", type=int, default=20000, help="RSS candles (20000)")
    ap.add_argument("--speed", type=float, default=100.0,
                    help="replayed candles per second for the latency runs (100)")
    ap.add_argument("--memory-speed", type=float, default=400.0,
                    help="replayed candles per second for the memory run (400)")
    ap.add_argument("--wrk-seconds", type=int, default=15, help="wrk duration (15)")
    ap.add_argument("--wrk-conns", type=int, default=16,
                    help="wrk connections (16: with 4, the kernel may hand all of them to one "
                         "of the two server processes)")
    ap.add_argument("--server-workers", type=int, default=2,
                    help="serve.py --workers for the model-server runs (2: one per core)")
    ap.add_argument("--tiny", action="store_true", help="a tiny bundle (the tests' sizes)")
    ap.add_argument("--out", default="reports/bench_live.json", help="where the JSON goes")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    flags = ["--epochs", "1", "--patience", "1", "--min-regime-windows", "20"]
    if args.tiny:
        flags += ["--lookback", "8", "--hidden-size", "4"]
    figures: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "torch": torch.__version__, "platform": platform.platform(),
                                 "load_average_at_start": os.getloadavg()[0],
                                 "http": "httptools" if _has("httptools") else "h11",
                                 "loop": "uvloop" if _has("uvloop") else "asyncio"}}
    n_mem = max(args.memory_candles, args.candles)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = train_bundle(root, 2500, flags)
        from bt_lstm.models.forecast import load_forecaster

        fc = load_forecaster(str(bundle), no_skill="trade")
        figures["bundle"] = {"lookback": fc.lookback, "flags": flags}
        from bt_lstm.live.klines import bundle_warmup

        warm = bundle_warmup(fc).history
        market = candles_of(make_market(n_bars=warm + n_mem + STOP_MARGIN + 10,
                                           seed=11).frame)
        start = warm + 5
        figures["in_process"] = replay_run(market, start, args.candles, root / "s1", args.speed,
                                           models=str(bundle))
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        server = subprocess.Popen([sys.executable, str(REPO / "runners" / "serve.py"),
                                   "--models", str(bundle), "--port", str(port), "--no-skill",
                                   "trade", "--quiet", *(["--workers", str(args.server_workers)]
                                                         if args.server_workers != 1 else [])],
                                  cwd=REPO, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    with urllib.request.urlopen(url + "/health/ready", timeout=1):
                        break
                except OSError:
                    time.sleep(0.1)
            figures["model_server"] = replay_run(market, start, args.candles, root / "s2",
                                                 args.speed, server=url)
            body = json.dumps({"candles": [dict(zip("tohlcv", c))
                                           for c in market[start:start + 500]]}).encode()
            figures["throughput"] = wrk_throughput(url, body, args.wrk_seconds, 1,
                                                   args.wrk_conns, server.pid)
            figures["throughput"]["server_workers"] = args.server_workers
        finally:
            server.terminate()
            server.wait(30)
        every = max(n_mem // 20, 1)
        mem = replay_run(market, start, n_mem, root / "s3", speed=args.memory_speed,
                         models=str(bundle), every=every)
        samples = mem.pop("rss_samples_mb")
        figures["memory"] = {"candles": mem["candles"], "wall_s": mem["wall_s"],
                             "rss_start_mb": samples[0][1] if samples else None,
                             "rss_end_mb": samples[-1][1] if samples else None,
                             "rss_samples_mb": samples,
                             "latency_median_ms": mem["median_ms"],
                             "latency_p99_ms": mem["p99_ms"]}
    figures["machine"]["load_average_at_end"] = os.getloadavg()[0]
    figures["goals"] = {"in_process_p99_ms": 30, "http_p99_ms": 60, "requests_per_s": 200}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    summary = {k: v for k, v in figures.items() if k != "memory"}
    summary["memory"] = {k: v for k, v in figures["memory"].items() if k != "rss_samples_mb"}
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":

    sys.exit(main())
