"""The chaos soak of the bus (benchmarks/soak_bus.py) and what it found.

A short soak runs here (a few markets, one kill of each role, one Redis restart, a feed drop:
nothing lost, doubled or different), plus each fix at small scale: roles that never run a
network do not import torch; per-candle latency lists are bounded; the engine's batched
forecasts equal one window at a time, bit for bit (what makes a byte-for-byte comparison with
the single-process replay possible); the multi-market exchange replay.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest
import test_live
from conftest import POSTGRES_URL, REPO, service_missing
from test_live_bus import bus, pg_state  # noqa: F401 (fixtures)

from bt_lstm.live.klines import candles_of
from bt_lstm.trading.values import Candle

pytestmark = pytest.mark.slow
main_run = test_live.main_run  # the fixture: one main-job run per module
sys.path.insert(0, str(REPO / "benchmarks"))


def need_services() -> None:
    """redis-server on PATH and the PostgreSQL server, or skip (fail in CI)."""
    import psycopg

    if shutil.which("redis-server") is None:
        service_missing("redis-server not on PATH (Debian: apt-get install redis-server; "
                        ".ci/run installs it)")
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        service_missing(f"no PostgreSQL server answers at {POSTGRES_URL} "
                        f"({str(exc).splitlines()[0]}); set BT_LSTM_TEST_POSTGRES_URL")


def test_a_short_soak_loses_doubles_and_changes_nothing(main_run, tmp_path):
    """3 markets at 2 candles/s for 36 s: the ingest, the engine and the decide process each
    killed once (every 10 s), Redis SIGKILLed and restarted on its append-only file, every
    WebSocket cut once; every closed candle decided once, as the single-process replay
    decides it, byte for byte."""
    need_services()
    import soak_bus

    rc = soak_bus.main(["--markets", "3", "--speed", "2", "--duration", "36", "--engines", "1",
                        "--kill-every", "10", "--drop-feed-every", "25",
                        "--models", str(main_run["bundle"]), "--out", str(tmp_path),
                        "--quiet"])
    out = json.loads(next(tmp_path.glob("soak_*/soak.json")).read_text())
    assert rc == 0 and out["ok"], out["counts"]
    c = out["counts"]
    assert c["lost"] == c["doubled"] == c["extra"] == 0 and out["drained"]
    assert c["decisions"] == 3 * c["closed_per_market"] and c["closed_per_market"] >= 60
    assert out["byte_for_byte"] == {"compared": 3, "different": 0, "differences": {},
                                    "fills_compared": out["byte_for_byte"]["fills_compared"]}
    assert out["byte_for_byte"]["fills_compared"] > 0, "no trade: the comparison is weak"
    kinds = sorted((e["kind"], e["target"]) for e in out["events"])
    assert kinds == [("drop", "feed"), ("kill", "decide0"), ("kill", "engine0"),
                     ("kill", "ingest"), ("redis", "redis")]
    assert out["streams"]["n_over_bound"] == 0
    assert (tmp_path / next(tmp_path.glob("soak_*")).name / "index.html").is_file()


def test_the_verdict_counts_lost_doubled_and_extra_decisions():
    from soak_verdict import count_check

    expected = [1000, 2000, 3000]
    decided = {"A": [(1000, 0), (2000, 1), (3000, 2)],  # as it should be
               "B": [(1000, 0), (3000, 1)],  # 2000 lost
               "C": [(1000, 0), (2000, 0), (3000, 2)],  # bar 0 twice: doubled
               "D": [(1000, 0), (2000, 1), (3000, 2), (4000, 3)]}  # never closed
    got = count_check(expected, decided, ["A", "B", "C", "D", "E"])
    assert (got["lost"], got["doubled"], got["extra"]) == (1 + 3, 1, 1)
    assert set(got["bad_markets"]) == {"B", "C", "D", "E"}


def test_the_recovery_window_ends_at_the_first_close_decided_in_time():
    from soak_verdict import latency_check

    close = {k * 1000: 100.0 + k for k in range(10)}  # a candle close a second
    # the event at 103.5: closes 104 and 105 decided late (at 107.0), 106 on time
    done = {t: c + 0.05 for t, c in close.items()}
    done.update({4000: 107.0, 5000: 107.0, 6000: 106.08})
    rows = [["S", "1m", t, c, done[t]] for t, c in close.items()]
    events = [{"time": 103.5, "kind": "kill", "target": "decide0"}]
    got = latency_check(rows, close, events, 250.0, 120.0)
    assert events[0]["recovered"] and events[0]["recovery_s"] == pytest.approx(2.58)
    assert got["inside_recovery"]["n"] == 3  # 103 (1 s before), 104, 105
    assert got["outside_recovery"]["max_ms"] == pytest.approx(80.0)  # the close at 106


# each role's entry point replaced by a report of whether torch is loaded by then
WHEN_STARTED = """
import os, sys
from bt_lstm.cli.live import main
from bt_lstm.live import ingest, roles

def started(*args, **kw):
    print('torch' in sys.modules, flush=True)
    os._exit(0)

ingest.run_ingest = roles.run_engine = roles.run_decide = started
main(sys.argv[1:])
"""


@pytest.mark.parametrize("role, imported", [("ingest", False), ("decide", False),
                                            ("engine", True)])
def test_only_the_engine_role_imports_torch(role, imported, tmp_path):
    """Found by the soak: every role imported torch at start (1.2-3 s of each restart after a
    kill, ~150 MB RSS); only the engine runs networks."""
    args = ["--bus", "redis://127.0.0.1:1/0", "--role", role, "--symbol", "AUSDT",
            "--timeframe", "1m", "--models", str(tmp_path), "--state", str(tmp_path)]
    out = subprocess.run([sys.executable, "-c", WHEN_STARTED, *args], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == str(imported), out.stderr


def test_batched_forecasts_equal_one_window_at_a_time(main_run):
    """The engine role forecasts a burst of markets in one network call; the single-process
    engine one window at a time: equal bit for bit (the soak compares decisions as bytes)."""
    from bt_lstm.live.engine import LocalForecasts
    from bt_lstm.live.klines import bundle_warmup
    from bt_lstm.models.forecast import load_forecaster

    fc = load_forecaster(str(main_run["bundle"]), no_skill="trade")
    n = bundle_warmup(fc).history
    candles = candles_of(main_run["candles"])
    lf = LocalForecasts(fc)
    windows = [candles[k:k + n] for k in range(0, len(candles) - n, 7)][:64]
    batched = lf.many(windows)
    assert len(windows) > 20 and sum(f[1] == f[1] for f in batched) > 10
    assert [tuple(map(repr, f)) for f in batched] == [tuple(map(repr, lf(w))) for w in windows]


def test_the_markets_replay_serves_each_market_on_one_port(main_run):
    """Each market's own WebSocket stream and REST klines on one port and one clock; a drop
    cuts every connection."""
    import websockets

    from bt_lstm.live.replay_many import MarketsReplay

    base = candles_of(main_run["candles"])[:40]
    markets = {"AUSDT": base, "BUSDT": [(c[0], *(x * 2 for x in c[1:5]), c[5]) for c in base]}
    rep = MarketsReplay(markets, "4h", 4 * 3_600_000, 30, speed=20.0, updates=1)

    async def go() -> tuple:
        stop = asyncio.Event()
        ready = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(rep.serve_forever("127.0.0.1", 0, ready, stop))
        port = await ready
        got: dict = {"AUSDT": [], "BUSDT": []}
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/ausdt@kline_4h") as a, \
                websockets.connect(f"ws://127.0.0.1:{port}/ws/busdt@kline_4h") as b:
            while rep.connected() < 2:
                await asyncio.sleep(0.01)
            rep.go()
            for ws, sym in ((a, "AUSDT"), (b, "BUSDT")):
                while len(got[sym]) < 3:
                    msg = json.loads(await ws.recv())
                    if msg["k"]["x"]:
                        got[sym].append((msg["s"], msg["k"]["t"], float(msg["k"]["c"])))
            url = (f"http://127.0.0.1:{port}/api/v3/klines?symbol=BUSDT&interval=4h"
                   f"&startTime={base[28][0]}")
            rows = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(url).read()))
            cut = rep.drop()
            await asyncio.sleep(0.1)
            closed = (a.state.name, b.state.name)
        stop.set()
        await server
        return got, rows, cut, closed

    got, rows, cut, closed = asyncio.run(go())
    assert got["AUSDT"][0] == ("AUSDT", base[30][0], base[30][4])
    assert got["BUSDT"][0] == ("BUSDT", base[30][0], base[30][4] * 2)
    assert [r[0] for r in rows[:3]] == [base[28][0], base[29][0], base[30][0]]
    assert float(rows[0][4]) == base[28][4] * 2
    assert cut == 2 and closed == ("CLOSED", "CLOSED")
    assert rep.close_times[base[30][0]] > 0


class _Taker:
    """A stand-in engine for the feed: takes every candle."""

    def __init__(self) -> None:
        self.last_ms, self.first_ms, self.acct = None, 0, {"bars": 0}
        self.feed_health = {"malformed": 0}

    def on_closed(self, candle) -> bool:
        self.last_ms = candle[0]
        return True


def test_the_feed_keeps_only_the_last_latencies(monkeypatch):
    """Found by the soak (RSS per role): the feed kept every candle's latency in a list, for
    ever; it keeps the last LATENCIES_KEPT."""
    from bt_lstm.live import feed
    from bt_lstm.live.klines import kline_message

    monkeypatch.setattr(feed, "LATENCIES_KEPT", 5)
    f = feed.KlineFeed(_Taker(), feed.FeedConfig("AUSDT", "1m", 60_000))
    for k in range(12):
        c = (60_000 * k, 1.0, 1.0, 1.0, 1.0, 1.0)
        assert f.on_message(kline_message("AUSDT", "1m", c, True, 60_000, 0), 0.0) is None
    assert f.engine.last_ms == 60_000 * 11 and len(f.latencies) == 5


def test_the_decide_role_keeps_only_the_last_latencies_and_files_them_all(monkeypatch, tmp_path):
    """Found by the soak: the decide role kept every latency in a list (written at exit, lost
    on a kill); the file now gets each batch's lines as they are committed, memory the last
    LATENCIES_KEPT."""
    import redis
    from conftest import REDIS_URL
    from test_live_bus import publish_forecasts, synthetic_forecasts

    from bt_lstm.config import StrategyConfig
    from bt_lstm.live import roles
    from bt_lstm.live.bus import BusConfig, connect

    r = connect(REDIS_URL)
    try:
        r.ping()
    except redis.RedisError as exc:
        service_missing(f"no Redis answers at {REDIS_URL} ({exc}); set BT_LSTM_TEST_REDIS_URL")
    monkeypatch.setattr(roles, "LATENCIES_KEPT", 3)
    cfg = BusConfig(REDIS_URL, prefix=f"soaktest-{tmp_path.name}:", consumer="d1",
                    stop_after=8, block_ms=50)
    try:
        data = synthetic_forecasts(2, 8)
        publish_forecasts(cfg, data)
        out = tmp_path / "lat.jsonl"
        role = roles.run_decide(cfg, StrategyConfig(), str(tmp_path / "state"),
                                [(s, "4h") for s in data], str(out))
    finally:
        for key in r.scan_iter(match=cfg.prefix + "*", count=1000):
            r.delete(key)
    assert role.counts["decided"] == 16 and len(role.latencies) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((s, t) for s, _, t, _, _ in rows) == sorted(
        (s, c[0]) for s, fcs in data.items() for c, _ in fcs)
    assert all(done >= sent for *_, sent, done in rows)


def test_a_candle_close_of_many_markets_is_one_round_trip_to_redis(tmp_path):
    """Found by the soak: the ingest sent each candle on its own (a round trip and, with
    appendfsync always, an fsync each): 200 markets' closes queued for most of a second, and
    a fresh stream's warm-up went at ~250 candles/s. Candles handled together on the event loop
    now go in one pipeline; a backfill's at its end; a candle already on the stream is refused
    by Redis and counted, the decided counter moved once."""
    import redis
    from conftest import REDIS_URL

    from bt_lstm.live.bus import BusConfig, connect
    from bt_lstm.live.ingest import PublishBatch, StreamPublisher

    r = connect(REDIS_URL)
    try:
        r.ping()
    except redis.RedisError as exc:
        service_missing(f"no Redis answers at {REDIS_URL} ({exc}); set BT_LSTM_TEST_REDIS_URL")
    cfg = BusConfig(REDIS_URL, prefix=f"soakpub-{tmp_path.name}:")
    try:
        batch = PublishBatch(r, cfg)
        pubs = [StreamPublisher(r, cfg, f"S{k}USDT", "1m", 5, batch) for k in range(10)]
        for p in pubs:
            p.set_first(180_000)
        for k, p in enumerate(pubs[:4]):  # a backfill: history and one decided candle
            for t in (60_000, 120_000, 180_000):
                assert p.on_closed(Candle(t, 1.0, 2.0, 0.5, 1.5 + k, 3.0))
            p.flush()
        assert batch.counts == {"flushes": 4, "candles": 12}

        async def close_all() -> None:  # one candle close of every market, as messages
            batch.loop = asyncio.get_running_loop()
            for p in pubs:
                assert p.on_closed(Candle(240_000, 1.0, 2.0, 0.5, 1.5, 3.0))
            assert batch.queue, "sent before the loop got back"
            await asyncio.sleep(0)
            assert not batch.queue

        asyncio.run(close_all())
        assert batch.counts == {"flushes": 5, "candles": 22}
        again = StreamPublisher(r, cfg, "S0USDT", "1m", 5, PublishBatch(r, cfg))
        again.acct["last_ms"] = None  # as if it had not read the stream's top
        assert again.on_closed(Candle(240_000, 1.0, 2.0, 0.5, 1.5, 3.0))
        again.flush()
        assert again.feed_health["duplicates"] == 1 and again.acct["bars"] == 2
        assert [i for i, _ in r.xrange(cfg.key("candles", "S0USDT", "1m"))] == [
            "60000-0", "120000-0", "180000-0", "240000-0"]
        assert r.hget(cfg.key("meta", "S0USDT", "1m"), "decided") == "2"
        assert r.xlen(cfg.key("candles", "S9USDT", "1m")) == 1
    finally:
        for key in r.scan_iter(match=cfg.prefix + "*", count=1000):
            r.delete(key)


class _CountingConn:
    """A connection that counts the COMMITs sent through it."""

    def __init__(self, conn) -> None:
        self.conn, self.commits = conn, 0

    def execute(self, sql, *args, **kw):
        self.commits += sql == "COMMIT"
        return self.conn.execute(sql, *args, **kw)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_a_burst_of_markets_is_one_postgresql_transaction(bus, pg_state, tmp_path):  # noqa: F811
    """Found by the soak: the decide role spent most of its time waiting on PostgreSQL, a
    transaction (and a WAL flush) per candle. A batch is now one transaction: 10 markets' candles
    one COMMIT, the decisions as the single-process run's; an error in the middle of a batch
    leaves none of its decisions."""
    import psycopg
    from test_live_bus import publish_forecasts, single_process, synthetic_forecasts

    from bt_lstm.config import StrategyConfig
    from bt_lstm.live.bus import connect
    from bt_lstm.live.roles import DecideRole

    data = synthetic_forecasts(10, 2)
    publish_forecasts(bus, data)
    r = connect(bus.url)
    role = DecideRole(r, bus, StrategyConfig(), pg_state, None)
    role.pg = role.pg_batch.conn = _CountingConn(role.pg)
    role.streams()

    def entries(k: int) -> list:
        return [(bus.key("forecasts", s, "4h"), *r.xrange(bus.key("forecasts", s, "4h"))[k])
                for s in sorted(data)]

    assert role.handle(entries(0)) == {}
    assert role.pg.commits == 1 and role.counts["decided"] == 10
    calls = {"n": 0}
    apply = role._apply

    def fail_at_the_fifth(eng, candle, fc):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("planted")
        return apply(eng, candle, fc)

    role._apply = fail_at_the_fifth
    with pytest.raises(RuntimeError, match="planted"):
        role.handle(entries(1))
    with psycopg.connect(pg_state) as conn:
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 10
    role._apply = apply
    assert role.handle(entries(1)) == {}  # as a restart would take the batch again
    role.close()
    want = single_process(data, tmp_path / "single")
    with psycopg.connect(pg_state) as conn:
        for symbol in data:
            dec = conn.execute("SELECT open_ms, bar, regime, forecast, signal, position, value, "
                               "model FROM decisions WHERE symbol = %s ORDER BY open_ms",
                               (symbol,)).fetchall()
            assert [tuple(d) for d in dec] == want[symbol][0], symbol
