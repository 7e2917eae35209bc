"""Chaos soak of the live pipeline split over Redis Streams (``runners/live.py --bus``).

Starts its own redis-server (free loopback port, ``appendonly yes``, ``appendfsync always``, in
a temporary folder), a fresh PostgreSQL schema for the decide role's state, the ingest role,
``--engines`` engine roles and ``--decides`` decide roles as real processes, and a feed: the
replay server's exchange protocol (``bt_lstm.live.replay_many``) replaying real candles for
``--markets`` markets (copies of ../shared/data's BTC/ETH 1h and 4h candles, each starting at
its own row and renamed, re-timed as 1-minute candles; the bundled BTCUSDT 4h snapshot where
the shared data is absent) at ``--speed`` candles a second per market. Meanwhile: every
``--kill-every`` seconds one role process is SIGKILLed and restarted under the same consumer
name (the victims drawn with ``--seed``, every role once per round in a shuffled order);
Redis is SIGKILLed once at ``--restart-redis-at`` and restarted on its append-only file; every
``--drop-feed-every`` seconds the exchange cuts every WebSocket (the ingest reconnects and
backfills over REST).

After ``--duration`` seconds the feed stops closing candles, the pipeline drains, and the
verdict is written to ``reports/soak_<stamp>/soak.json`` and ``index.html``: for every market
every closed candle has exactly one committed decision (none lost, none doubled), the
decisions and fills equal a single-process replay's on the same candles byte for byte,
latency candle close -> committed decision (median, p99, max) outside and inside the recovery
windows after each event, time to recover after each event, RSS at start and end of every
role process, stream lengths against ``--retention``. Exit 1 when anything was lost, doubled or
different (or the pipeline did not drain); 0 otherwise (the speed targets are reported in
``targets``, not enforced).

    python benchmarks/soak_bus.py --markets 20 --duration 120
    python benchmarks/soak_bus.py --markets 200 --speed 1 --duration 600 --kill-every 20 \\
        --restart-redis-at 300 --drop-feed-every 120

Targets (issue 27, 2 cores): 200 markets x 1 candle/s for 10 min, a kill every 20 s, one Redis
restart: nothing lost, doubled or different; p99 close -> decision <= 250 ms outside the
recovery windows; recovery <= 5 s; RSS growth <= 5 % per role.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from soak_procs import RedisServer, ReplayThread, Role, drop_schema, pg_schema, rss_mb  # noqa: E402
from soak_verdict import (  # noqa: E402
    byte_check,
    count_check,
    decided_rows,
    latency_check,
    read_latencies,
    rss_check,
    stream_check,
)

TIMEFRAME, BAR_MS = "1m", 60_000
T0_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC: the soak's clock starts here
POSTGRES_URL = os.environ.get("BT_LSTM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BASES = (("BTCUSDT", "1h"), ("BTCUSDT", "4h"), ("ETHUSDT", "1h"), ("ETHUSDT", "4h"))
TARGETS = {"p99_ms": 250.0, "recovery_s": 5.0, "rss_growth_pct": 5.0}


def build_parser() -> argparse.ArgumentParser:
    """The soak's flags (each with its default and meaning)."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--markets", type=int, default=20, help="markets replayed at once (20)")
    a("--speed", type=float, default=1.0, help="candles a second per market (1)")
    a("--duration", type=float, default=120.0, help="seconds of candles replayed (120)")
    a("--engines", type=int, default=2, help="engine processes (2)")
    a("--decides", type=int, default=1, help="decide processes on the one PostgreSQL state (1)")
    a("--kill-every", type=float, default=20.0,
      help="SIGKILL one role process every S seconds and restart it; 0: never (20)")
    a("--restart-redis-at", type=float, default=None,
      help="SIGKILL Redis T seconds in and restart it on its append-only file (default: halfway;"
           " a negative value: never)")
    a("--drop-feed-every", type=float, default=0.0,
      help="cut every exchange WebSocket every S seconds; 0: never (0)")
    a("--retention", default=None,
      help="the roles' --retention (default: the bundle's warm-up history + 200 entries, so "
           "streams are trimmed during the run)")
    a("--seed", type=int, default=0, help="seed of the kill order (0)")
    a("--models", default=None,
      help="model bundle for the engines (default: a tiny one trained on synthetic candles)")
    a("--updates", type=int, default=1, help="unfinished-candle messages before each close (1)")
    a("--batch", type=int, default=64, help="the engine and decide roles' --batch (64)")
    a("--claim-idle", type=float, default=5.0,
      help="the roles' --claim-idle: a dead consumer's entries are taken over after S s (5)")
    a("--drain-timeout", type=float, default=180.0,
      help="seconds to wait, after the last candle, for every decision (180)")
    a("--postgres", default=POSTGRES_URL,
      help="PostgreSQL server URL; the soak makes a fresh schema soak_<stamp> (and drops it)")
    a("--data-dir", default=os.environ.get("BT_LSTM_REAL_DATA",
                                           str(REPO.parent / "shared" / "data")),
      help="folder of the real candles, BTCUSDT_1h.csv, BTCUSDT_4h.csv, ETHUSDT_4h.csv ... "
           "(default $BT_LSTM_REAL_DATA or ../shared/data; absent: the bundled snapshot)")
    a("--out", default=str(REPO / "reports"), help="the report goes to OUT/soak_<stamp>/")
    a("--quiet", action="store_true", help="no progress lines")
    return ap


def check_args(args: argparse.Namespace) -> None:
    """Bad values: ``ValueError`` naming the flag."""
    for name in ("markets", "engines", "decides", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)}: give 1 or more")
    for name in ("speed", "duration"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name} {getattr(args, name)}: give a positive number")
    for name in ("kill_every", "drop_feed_every", "claim_idle"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: give 0 or more")
    if args.retention is not None:
        from bt_lstm.live.bus import parse_retention

        parse_retention(args.retention)


# -- candles ---------------------------------------------------------------------------------
def base_series(data_dir: Path) -> list[tuple[str, list]]:
    """The real candle series the markets are copied from: BTC/ETH 1h and 4h from
    ``data_dir`` where present, else the bundled BTCUSDT 4h snapshot."""
    from bt_lstm.data.candles import load_ohlcv
    from bt_lstm.data.snapshot import find_snapshot, load_snapshot
    from bt_lstm.live.klines import candles_of

    out = []
    for symbol, tf in BASES:
        path = data_dir / f"{symbol}_{tf}.csv"
        if path.is_file():
            out.append((f"{symbol[:3]}{tf.upper()}", candles_of(load_ohlcv(path))))
    if not out:
        out.append(("BTC4H", candles_of(load_snapshot(find_snapshot("BTCUSDT", "4h")))))
    return out


def make_markets(bases: list[tuple[str, list]], n_markets: int, n_rows: int) -> dict[str, list]:
    """``n_markets`` markets ``K<k><BASE>USDT``, market k a copy of base ``k % len(bases)``
    from its own row on (spread over the base's length), re-timed as ``n_rows`` 1-minute
    candles on one clock (every market closes a candle at each tick)."""
    from bt_lstm.trading.values import Candle

    out = {}
    per_base = -(-n_markets // len(bases))
    for k in range(n_markets):
        name, rows = bases[k % len(bases)]
        room = len(rows) - n_rows
        if room < 0:
            raise ValueError(f"{name} has {len(rows)} candles: {n_rows} needed per market "
                             f"(lower --duration or --speed)")
        start = (k // len(bases)) * (room // max(per_base, 1))
        out[f"K{k:03d}{name}USDT"] = [Candle(T0_MS + j * BAR_MS, *rows[start + j][1:])
                                      for j in range(n_rows)]
    return out


def tiny_bundle(root: Path) -> Path:
    """A tiny bundle (the tests' sizes) trained on synthetic candles: the soak is about the
    bus, not the model."""
    from bench_live import train_bundle

    root.mkdir(parents=True, exist_ok=True)
    return train_bundle(root, 2500, ["--lookback", "8", "--hidden-size", "4", "--epochs", "1",
                                     "--patience", "1", "--min-regime-windows", "20"])


# -- the run ---------------------------------------------------------------------------------
class Soak:
    """One soak run: its services, processes, chaos schedule and measurements."""

    def __init__(self, args: argparse.Namespace, folder: Path, tmp: Path) -> None:
        self.args, self.folder, self.tmp = args, folder, tmp
        self.logs = folder / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.events: list[dict] = []
        self.samples: dict[str, list] = {"time": [], "load1": [], "decided": [],
                                         "candles_max": [], "forecasts_max": [],
                                         "candles_min": [], "redis_mb": [], "feed_mb": []}
        self.redis: RedisServer | None = None
        self.replay = None
        self.roles: dict[str, Role] = {}
        self.redis_lives: list[dict] = []
        self.r = None  # the sampler's Redis client

    def say(self, msg: str) -> None:
        """A progress line (not with --quiet)."""
        if not self.args.quiet:
            print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def setup(self) -> None:
        """The bundle, the markets, Redis, PostgreSQL, the replay and the roles, ready."""
        from bt_lstm.live.klines import bundle_warmup
        from bt_lstm.live.replay_many import MarketsReplay
        from bt_lstm.models.forecast import load_forecaster

        a = self.args
        self.bundle = Path(a.models) if a.models else tiny_bundle(self.tmp / "bundle")
        self.fc = load_forecaster(str(self.bundle), no_skill="trade")
        self.history = bundle_warmup(self.fc).history
        self.retention = a.retention or str(self.history + 200)
        self.n_ticks = int(a.duration * a.speed)
        rows = self.history + self.n_ticks + 50
        self.markets = make_markets(base_series(Path(a.data_dir)), a.markets, rows)
        self.symbols = sorted(self.markets)
        self.redis = RedisServer(self.tmp / "redis")
        self.redis.start()
        self.redis_lives.append({"pid": self.redis.proc.pid, "start": time.time()})
        self.schema = f"soak_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
        self.pg = pg_schema(a.postgres, self.schema)
        self.replay = MarketsReplay(self.markets, TIMEFRAME, BAR_MS, self.history, a.speed,
                                    a.updates)
        self.feed = ReplayThread(self.replay)
        self.say(f"{a.markets} markets x {self.n_ticks} candles, warm-up {self.history}, "
                 f"retention {self.retention}; redis {self.redis.url}, schema {self.schema}")
        self.start_roles()
        self.wait_ready()

    def start_roles(self) -> None:
        """ingest, engine0.., decide0.. as processes of ``runners/live.py --bus``."""
        a, url = self.args, f"http://127.0.0.1:{self.feed.port}"
        common = ["--bus", self.redis.url, "--timeframe", TIMEFRAME, "--retention",
                  self.retention, "--backoff", "0.1", "--claim-idle", str(a.claim_idle),
                  "--no-skill", "trade", "--quiet"]
        specs = {"ingest": ["--role", "ingest", "--symbol", ",".join(self.symbols), "--ws-url",
                            url.replace("http", "ws"), "--rest-url", url, "--history-bars",
                            str(self.history), "--consumer", "ingest"]}
        for i in range(a.engines):
            specs[f"engine{i}"] = ["--role", "engine", "--models", str(self.bundle),
                                   "--consumer", f"engine{i}", "--batch", str(a.batch)]
        for i in range(a.decides):
            specs[f"decide{i}"] = ["--role", "decide", "--state", self.pg, "--consumer",
                                   f"decide{i}", "--batch", str(a.batch), "--latency-out",
                                   str(self.folder / f"latency_decide{i}.{{n}}.jsonl")]
        for name, spec in specs.items():
            self.roles[name] = Role(name, [*common, *spec], self.logs)
            self.roles[name].start()

    def wait_ready(self, timeout: float = 900.0) -> None:
        """Every market's WebSocket open and warm-up published; every engine and decide
        process reading every stream."""
        import redis

        with redis.Redis.from_url(self.redis.url, decode_responses=True) as r:
            self._wait_ready(r, timeout)

    def _wait_ready(self, r, timeout: float) -> None:
        import redis

        deadline = time.time() + timeout
        n_eng, n_dec = self.args.engines, self.args.decides
        while time.time() < deadline:
            for role in self.roles.values():
                if not role.alive():
                    raise RuntimeError(f"{role.name} exited at start: see {self.logs}")
            try:
                pipe = r.pipeline(transaction=False)
                for s in self.symbols:
                    pipe.xlen(f"candles:{s}:{TIMEFRAME}")
                    pipe.xinfo_groups(f"candles:{s}:{TIMEFRAME}")
                    pipe.xinfo_groups(f"forecasts:{s}:{TIMEFRAME}")
                got = pipe.execute()
            except redis.ResponseError:
                got = None
            # a blocked XREADGROUP on many streams joins the consumer to some of their groups
            # only: the decide processes are up once every group exists and each has joined one
            if got and self.replay.connected() == len(self.symbols) and all(
                    n >= self.history and _consumers(ge, "engine") >= n_eng
                    and any(g["name"] == "decide" for g in gd)
                    for n, ge, gd in zip(got[::3], got[1::3], got[2::3])) and max(
                    _consumers(gd, "decide") for gd in got[2::3]) >= n_dec:
                self.say("every role ready")
                return
            time.sleep(1.0)
        raise RuntimeError(f"the roles were not ready within {timeout:.0f} s: see {self.logs}")

    def schedule(self) -> list[tuple[float, str, str]]:
        """(seconds after the start, kind, target) of every chaos event: kills (every role
        once per round, each round shuffled with --seed), the Redis restart, feed drops."""
        a, rng = self.args, random.Random(self.args.seed)
        out, names = [], sorted(self.roles)
        if a.kill_every > 0:
            k, order = 1, []
            while k * a.kill_every < a.duration:
                if not order:
                    order = names[:]
                    rng.shuffle(order)
                out.append((k * a.kill_every, "kill", order.pop()))
                k += 1
        at = a.duration / 2 if a.restart_redis_at is None else a.restart_redis_at
        if 0 <= at < a.duration:
            out.append((at + 0.5, "redis", "redis"))  # not at the same moment as a kill
        if a.drop_feed_every > 0:
            k = 1
            while k * a.drop_feed_every < a.duration:
                out.append((k * a.drop_feed_every + 1.5, "drop", "feed"))
                k += 1
        return sorted(out)

    def run(self) -> None:
        """Start the clock, fire the chaos on schedule, sample every second."""
        plan = self.schedule()
        self.feed.call(self.replay.go)
        self.t0 = time.time()
        next_sample = next_say = self.t0
        while True:
            now = time.time()
            el = now - self.t0
            if el >= self.args.duration:
                break
            while plan and plan[0][0] <= el:
                self.fire(*plan.pop(0))
            if now >= next_sample:
                self.sample(now)
                next_sample += 1.0
            if now >= next_say:
                self.progress(el)
                next_say += 10.0
            time.sleep(0.05)
        self.feed.call(self.replay.halt)
        self.end_ms = None

    def fire(self, at: float, kind: str, target: str) -> None:
        """One chaos event, recorded with its wall time."""
        ev = {"at_s": round(at, 2), "kind": kind, "target": target, "time": time.time()}
        if kind == "kill":
            role = self.roles[target]
            role.kill()
            role.start()
        elif kind == "redis":
            self.redis.kill()
            self.redis_lives[-1]["end"] = time.time()
            self.redis.start()
            self.redis_lives.append({"pid": self.redis.proc.pid, "start": time.time()})
            ev["down_s"] = round(time.time() - ev["time"], 3)
        else:
            ev["connections_cut"] = self.feed.call(self.replay.drop)
        self.events.append(ev)
        self.say(f"{kind} {target} at {at:.1f} s")

    def sample(self, now: float) -> None:
        """RSS of every process, stream lengths, load average, decisions so far."""
        import redis

        for role in self.roles.values():
            role.sample(now)
        s = self.samples
        s["time"].append(round(now, 2))
        s["load1"].append(os.getloadavg()[0])
        s["redis_mb"].append(rss_mb(self.redis.proc.pid))
        s["feed_mb"].append(rss_mb(os.getpid()))
        try:
            if self.r is None:
                self.r = redis.Redis.from_url(self.redis.url, socket_timeout=2)
            pipe = self.r.pipeline(transaction=False)
            for kind in ("candles", "forecasts"):
                for sym in self.symbols:
                    pipe.xlen(f"{kind}:{sym}:{TIMEFRAME}")
            n = pipe.execute()
            m = len(self.symbols)
            s["candles_max"].append(max(n[:m]))
            s["candles_min"].append(min(n[:m]))
            s["forecasts_max"].append(max(n[m:]))
        except redis.RedisError:  # restarting
            for k in ("candles_max", "candles_min", "forecasts_max"):
                s[k].append(None)
        s["decided"].append(self.decided())

    def decided(self) -> int | None:
        """Decisions committed so far (every market)."""
        import psycopg

        try:
            with psycopg.connect(self.pg, connect_timeout=5) as conn:
                return int(conn.execute("SELECT coalesce(sum(bars), 0) FROM account")
                           .fetchone()[0])
        except psycopg.Error:
            return None

    def progress(self, el: float) -> None:
        """One line: elapsed, candles closed, decisions, events, load."""
        d = self.samples["decided"][-1] if self.samples["decided"] else None
        closed = self.replay.counts["closed_ticks"] * len(self.symbols)
        self.say(f"{el:6.0f} s: {closed} candles closed, {d} decided, "
                 f"{len(self.events)} events, load {os.getloadavg()[0]:.2f}")

    def drain(self) -> bool:
        """Wait until every market has decided the last closed candle."""
        import psycopg

        self.last_ms = self.replay.times[self.replay.cur - 1]
        deadline = time.time() + self.args.drain_timeout
        while time.time() < deadline:
            self.sample(time.time())
            with psycopg.connect(self.pg, connect_timeout=5) as conn:
                n = conn.execute("SELECT count(*) FROM account WHERE last_ms >= %s",
                                 (self.last_ms,)).fetchone()[0]
            if n == len(self.symbols):
                return True
            time.sleep(1.0)
        return False

    def stop(self) -> dict[str, int]:
        """Stream lengths at the end; every role, the feed and Redis stopped."""
        import redis

        lengths = {}
        with redis.Redis.from_url(self.redis.url, decode_responses=True) as r:
            for kind in ("candles", "forecasts"):
                for s in self.symbols:
                    lengths[f"{kind}:{s}:{TIMEFRAME}"] = r.xlen(f"{kind}:{s}:{TIMEFRAME}")
        if self.r is not None:
            self.r.close()
        for role in self.roles.values():
            role.sample(time.time())
            role.kill()
        self.feed.close()
        self.redis.close()
        return lengths


def _consumers(groups: list[dict], name: str) -> int:
    return next((g["consumers"] for g in groups if g["name"] == name), 0)


# -- the verdict -----------------------------------------------------------------------------
def verdict(soak: Soak, drained: bool, lengths: dict[str, int]) -> dict:
    """Everything soak.json holds (see the module docstring)."""
    from bt_lstm.config import StrategyConfig

    a, rep = soak.args, soak.replay
    first, end = soak.history, rep.cur
    expected = rep.times[first:end]
    counts = count_check(expected, decided_rows(soak.pg), soak.symbols)
    soak.say(f"counts: {counts['decisions']} decisions, lost {counts['lost']}, doubled "
             f"{counts['doubled']}, extra {counts['extra']}; comparing with a single-process "
             f"replay")
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    same = byte_check(soak.pg, soak.markets, first, end, soak.fc, soak.history,
                      StrategyConfig(no_skill="trade"), TIMEFRAME, scratch)
    lat_files = sorted(soak.folder.glob("latency_decide*.jsonl"))
    lat = latency_check(read_latencies(lat_files), rep.close_times, soak.events,
                        TARGETS["p99_ms"], time.time(), soak.t0)
    rss = rss_check({n: r.lives for n, r in soak.roles.items()})
    streams = stream_check(lengths, soak.retention)
    loads = [x for x in soak.samples["load1"] if x is not None]
    ok = drained and not (counts["lost"] or counts["doubled"] or counts["extra"]
                          or same["different"])
    growth = [v["max_growth_pct"] for v in rss.values() if v["max_growth_pct"] is not None]
    return {
        "ok": ok, "drained": drained,
        "settings": {k: v for k, v in vars(a).items() if k not in ("postgres",)}
        | {"retention": soak.retention, "warmup_history": soak.history,
           "bundle": str(soak.bundle), "candles_per_market": len(expected)},
        "machine": {"cpus": os.cpu_count(), "load1_mean": round(sum(loads) / len(loads), 2)
                    if loads else None, "load1_max": max(loads) if loads else None},
        "counts": counts, "byte_for_byte": same, "latency": lat, "events": soak.events,
        "rss_mb": rss, "streams": streams,
        "targets": {"p99_ms": TARGETS["p99_ms"],
                    "p99_met": lat["outside_recovery"].get("p99_ms", 1e9) <= TARGETS["p99_ms"],
                    "recovery_s": TARGETS["recovery_s"],
                    "recovery_met": (lat["recovery_s"]["max"] or 0) <= TARGETS["recovery_s"],
                    "rss_growth_pct": TARGETS["rss_growth_pct"],
                    "rss_met": all(g <= TARGETS["rss_growth_pct"] for g in growth),
                    "streams_bounded": streams["n_over_bound"] == 0},
        "samples": soak.samples, "redis_lives": soak.redis_lives,
        "rss_series": {n: r.lives for n, r in soak.roles.items()},
        "replay": dict(rep.counts)}


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when nothing was lost, doubled or different, 1 otherwise, 2 for a bad
    flag."""
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from bt_lstm.data.files import atomic_write_json

    # SIGTERM (or SIGINT in a background job, where it is ignored) still cleans up below
    signal.signal(signal.SIGTERM, _interrupt)
    folder = Path(args.out) / f"soak_{time.strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak = Soak(args, folder, Path(tmp))
        try:
            soak.setup()
            soak.run()
            soak.say("last candle closed: draining")
            drained = soak.drain()
            lengths = soak.stop()
            out = verdict(soak, drained, lengths)
        finally:
            for role in soak.roles.values():
                role.kill()
            if soak.replay is not None:
                soak.feed.close()
            if soak.redis is not None:
                soak.redis.close()
            if getattr(soak, "schema", None):
                drop_schema(args.postgres, soak.schema)
    atomic_write_json(folder / "soak.json", out)
    from soak_html import write_html

    write_html(out, folder)
    summary(out, folder)
    return 0 if out["ok"] else 1


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def summary(out: dict, folder: Path) -> None:
    """The verdict in a few lines."""
    c, lat, t = out["counts"], out["latency"], out["targets"]
    print(f"{'PASS' if out['ok'] else 'FAIL'}: {c['markets']} markets, {c['decisions']} "
          f"decisions; lost {c['lost']}, doubled {c['doubled']}, extra {c['extra']}, "
          f"different {out['byte_for_byte']['different']} of {out['byte_for_byte']['compared']}"
          f"{'' if out['drained'] else ' (did not drain)'}")
    print(f"latency outside recovery: {json.dumps(lat['outside_recovery'])}; inside: "
          f"{json.dumps(lat['inside_recovery'])}")
    print(f"recovery: {json.dumps(lat['recovery_s'])}; load avg mean "
          f"{out['machine']['load1_mean']} max {out['machine']['load1_max']}")
    print(f"targets: {json.dumps(t)}")
    print(f"written to {folder / 'soak.json'} and {folder / 'index.html'}")


if __name__ == "__main__":
    sys.exit(main())
