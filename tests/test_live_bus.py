"""Live scale-out over Redis Streams: real Redis, real PostgreSQL, real processes.

The replay parity test of the live issue through ingest -> 2 engines -> decide, and the fault
cases: an engine killed mid-run, decide killed between its commit and its XACK, two decide
processes on one PostgreSQL state with ten symbols, every role restarted, a malformed entry.
"""
from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import test_live
from conftest import POSTGRES_URL, REDIS_URL, REPO, service_missing
from test_live import Replay, assert_parity

from bt_lstm.config import StrategyConfig
from bt_lstm.live.bus import (
    BusConfig,
    bus_status,
    candle_fields,
    connect,
    forecast_fields,
    format_status,
)
from bt_lstm.live.engine import LiveEngine, LocalForecasts
from bt_lstm.live.klines import Warmup, bundle_warmup, candles_of
from bt_lstm.live.roles import run_decide, run_engine

pytestmark = pytest.mark.slow
main_run = test_live.main_run  # the fixture: one main-job run per module
BAR = 4 * 3_600_000
ENV = dict(os.environ, PYTHONPATH=str(REPO))


@pytest.fixture()
def bus():
    """A unique key prefix on the test Redis; its keys are deleted afterwards."""
    import redis

    r = connect(REDIS_URL)
    try:
        r.ping()
    except redis.RedisError as exc:
        service_missing(f"no Redis answers at {REDIS_URL} ({exc}); set BT_LSTM_TEST_REDIS_URL")
    prefix = f"bt17test-{uuid.uuid4().hex[:8]}:"
    yield BusConfig(REDIS_URL, prefix=prefix, claim_idle_ms=1000)
    for key in r.scan_iter(match=prefix + "*", count=1000):
        r.delete(key)


@pytest.fixture()
def pg_state():
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards)."""
    import psycopg

    schema = f"bt17_{uuid.uuid4().hex[:8]}"
    try:
        conn = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        service_missing(f"no PostgreSQL server answers at {POSTGRES_URL} "
                        f"({str(exc).splitlines()[0]}); set BT_LSTM_TEST_POSTGRES_URL")
    conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


# The fault of the crash test, injected from here: `bt-lstm live` whose decide role exits
# (as a kill would) right after its Nth commit, before that entry's XACK.
KILLED_AFTER_COMMIT = """
import os, sys
from bt_lstm.cli.live import main
from bt_lstm.live import roles

n, apply = int(sys.argv[1]), roles.DecideRole._apply

def apply_then_die(self, eng, candle, fc):
    done = apply(self, eng, candle, fc)
    if done and self.commits == n:
        os._exit(137)
    return done

roles.DecideRole._apply = apply_then_die
sys.exit(main(sys.argv[2:]))
"""


def role(bus: BusConfig, *args: str, env: dict | None = None, kill_after_commit: int = 0,
         **kw) -> subprocess.Popen:
    program = ([str(REPO / "runners" / "live.py")] if not kill_after_commit
               else ["-c", KILLED_AFTER_COMMIT, str(kill_after_commit)])
    cmd = [sys.executable, *program, "--bus", bus.url, "--bus-prefix", bus.prefix,
           "--claim-idle", "1", "--backoff", "0.05", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env or ENV, **kw)


def ingest(bus, run, replay) -> subprocess.Popen:
    # the first decided candle, as the in-process run's (the replay's clock may have moved on
    # by the time a loaded machine's ingest asks for the server time)
    first = int(run["candles"].index[run["start"]].value // 1_000_000)
    connect(bus.url).hsetnx(bus.key("meta", "BTCUSDT", "4h"), "first_ms", first)
    return role(bus, "--role", "ingest", "--symbol", "BTCUSDT", "--timeframe", "4h",
                *replay.urls(), "--stop-after", str(len(run["bars"])), "--quiet")


def engine(bus, run, name: str, **kw) -> subprocess.Popen:
    return role(bus, "--role", "engine", "--models", str(run["bundle"]), "--no-skill", "trade",
                "--symbol", "BTCUSDT", "--timeframe", "4h", "--consumer", name,
                "--stop-after", str(len(run["bars"])), "--quiet", **kw)


def decide(bus, run, state, name: str = "d1", env: dict | None = None,
           **kw) -> subprocess.Popen:
    return role(bus, "--role", "decide", "--state", str(state), "--no-skill", "trade",
                "--symbol", "BTCUSDT", "--timeframe", "4h", "--consumer", name,
                "--stop-after", str(len(run["bars"])), "--quiet", env=env, **kw)


def wait_until(pred, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def finish(*procs: subprocess.Popen, timeout: float = 240.0) -> None:
    try:
        for p in procs:
            assert p.wait(timeout) == 0, p.args
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def n_forecasts(bus: BusConfig) -> int:
    return connect(bus.url).xlen(bus.key("forecasts", "BTCUSDT", "4h"))


def check_streams(bus: BusConfig, run: dict) -> None:
    """Every decided candle has exactly one forecast (ids are unique), none pending."""
    r = connect(bus.url)
    fkey = bus.key("forecasts", "BTCUSDT", "4h")
    ids = [i for i, _ in r.xrange(fkey)]
    assert len(ids) == len(run["bars"]) == len(set(ids))
    assert r.xinfo_groups(fkey)[0]["pending"] == 0
    assert r.xinfo_groups(bus.key("candles", "BTCUSDT", "4h"))[0]["pending"] == 0
    assert r.xlen(bus.key("deadletter:engine")) == 0
    assert r.xlen(bus.key("deadletter:decide")) == 0


def stop_while_holding(proc: subprocess.Popen, r, stream: str, tries: int = 400) -> list:
    """SIGSTOP ``proc`` (an engine named e1) at a moment it holds read but unacknowledged
    entries of ``stream``; returns them. Retries (SIGCONT, a few ms) until it does."""
    for _ in range(tries):
        proc.send_signal(signal.SIGSTOP)
        held = r.xpending_range(stream, "engine", "-", "+", 1000, consumername="e1")
        if held:
            return held
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.003)
    return []


def role_counts(out: str, role: str) -> dict:
    """The counts dict a role prints at its end (``engine e2: {...}``), parsed."""
    found = re.search(re.escape(role) + r": (\{[^}]*\})", out)
    assert found, f"no counts line of {role!r} in: {out}"
    return ast.literal_eval(found.group(1))


def test_parity_through_the_bus_with_two_engines(main_run, bus, tmp_path):
    replay = Replay(main_run)
    state = tmp_path / "state"
    procs = [engine(bus, main_run, "e1"), engine(bus, main_run, "e2"),
             decide(bus, main_run, state)]
    try:
        procs.append(ingest(bus, main_run, replay))
        finish(procs[3], procs[2], procs[0], procs[1])
    finally:
        replay.close()
    assert_parity(main_run, state / "BTCUSDT_4h")
    check_streams(bus, main_run)
    st = bus_status(connect(bus.url), bus)
    assert st["streams"][bus.key("forecasts", "BTCUSDT", "4h")]["groups"]["decide"]["lag"] == 0
    out = subprocess.run([sys.executable, str(REPO / "runners" / "live.py"), "--bus", bus.url,
                          "--bus-prefix", bus.prefix, "--status"], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and bus.key("candles", "BTCUSDT", "4h") in out.stdout
    assert "decide" in out.stdout and "engine" in out.stdout
    status = json.loads((state / "BTCUSDT_4h" / "status.json").read_text())
    assert "bus" in status["feed"]


def test_an_engine_killed_mid_run_is_taken_over(main_run, bus, tmp_path):
    replay = Replay(main_run, speed=20.0)
    state = tmp_path / "state"
    e1 = engine(bus, main_run, "e1")
    e2 = engine(bus, main_run, "e2", stdout=subprocess.PIPE, text=True)
    d = decide(bus, main_run, state)
    try:
        ing = ingest(bus, main_run, replay)
        wait_until(lambda: n_forecasts(bus) > 30)
        held = stop_while_holding(e1, connect(bus.url), bus.key("candles", "BTCUSDT", "4h"))
        e1.send_signal(signal.SIGKILL)
        e1.wait(10)
        out, _ = e2.communicate(timeout=240)
        finish(ing, d, e2)
    finally:
        for p in (e1, e2, d):
            if p.poll() is None:
                p.kill()
        replay.close()
    assert_parity(main_run, state / "BTCUSDT_4h")
    check_streams(bus, main_run)  # e1's pending entries: reclaimed by e2 and acknowledged
    assert held, "e1 never held an entry when it was stopped"
    assert role_counts(out, "engine e2")["claimed"] >= len(held), out  # reclaimed (XAUTOCLAIM)


def test_decide_killed_after_commit_then_every_role_restarted(main_run, bus, tmp_path):
    """decide exits between its 25th commit and that XACK; the engine and the feed are killed
    too; restarted (feed, decide under the same consumer name, engine): no second decision or
    fill, and the decisions equal the in-process run's."""
    replay = Replay(main_run, speed=10.0)
    state = tmp_path / "state"
    e1 = engine(bus, main_run, "e1")
    ing = ingest(bus, main_run, replay)
    d = decide(bus, main_run, state, kill_after_commit=25)
    procs = [e1, ing, d]
    try:
        assert d.wait(240) == 137
        r = connect(bus.url)
        pend = r.xpending(bus.key("forecasts", "BTCUSDT", "4h"), "decide")
        assert pend["pending"] >= 1, "the 25th forecast was committed but never acknowledged"
        for p in (e1, ing):
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        time.sleep(0.3)
        ing = ingest(bus, main_run, replay)
        d = decide(bus, main_run, state, stdout=subprocess.PIPE, text=True)
        e1 = engine(bus, main_run, "e1")
        procs = [ing, d, e1]
        out, _ = d.communicate(timeout=240)
        assert d.returncode == 0
        finish(ing, e1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        replay.close()
    # the committed but unacknowledged forecast came back and was skipped, not decided again
    assert role_counts(out, "decide d1")["duplicates"] >= 1, out
    assert_parity(main_run, state / "BTCUSDT_4h")
    check_streams(bus, main_run)


# -- without models: forecasts published by the test itself ---------------------------------
def synthetic_forecasts(n_symbols: int, n: int, seed: int = 7) -> dict[str, list[tuple]]:
    """Per symbol: n (candle, forecast) pairs on a random walk, forecasts large enough to
    trade."""
    rng = np.random.default_rng(seed)
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % BAR
    out = {}
    for k in range(n_symbols):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n + 1)))
        rows = []
        for i in range(n):
            o, c = float(close[i]), float(close[i + 1])
            candle = (t0 + i * BAR, o, max(o, c) * 1.01, min(o, c) * 0.99, c, 10.0 + i)
            f = float(rng.normal(0, 0.01))
            rows.append((candle, (int(rng.integers(0, 3)), f, f"m{k}")))
        out[f"SYM{k}USDT"] = rows
    return out


def publish_forecasts(bus: BusConfig, data: dict[str, list[tuple]]) -> None:
    r = connect(bus.url)
    for symbol, rows in data.items():
        r.sadd(bus.key("markets"), f"{symbol}:4h")
        for candle, fc in rows:
            r.xadd(bus.key("forecasts", symbol, "4h"), forecast_fields(candle, fc, time.time()),
                   id=f"{candle[0]}-0")


def single_process(data: dict[str, list[tuple]], folder: Path) -> dict[str, list[tuple]]:
    """The in-process engine's decisions for the same forecasts (one process, SQLite)."""
    out = {}
    for symbol, rows in data.items():
        fcs = iter([fc for _, fc in rows])
        eng = LiveEngine(lambda _c, it=fcs: next(it), StrategyConfig(), symbol, "4h",
                         folder / symbol, Warmup(first_ready=1, history=5), BAR)
        eng.set_first(rows[0][0][0])
        for candle, _ in rows:
            assert eng.on_closed(candle)
        out[symbol] = (eng.state.decisions(), eng.state.fills())
        eng.close()
    return out


def test_two_decide_processes_on_postgresql_ten_symbols(bus, pg_state, tmp_path):
    import psycopg

    n = 40
    data = synthetic_forecasts(10, n)
    symbols = ",".join(data)
    procs = [role(bus, "--role", "decide", "--state", pg_state, "--symbol", symbols,
                  "--timeframe", "4h", "--consumer", f"d{i}", "--stop-after", str(n), "--quiet",
                  stdout=subprocess.PIPE, text=True) for i in (1, 2)]
    # both consumers in the group before the forecasts arrive (otherwise the process that
    # starts first may take them all before the other has imported its libraries)
    r = connect(bus.url)
    first = bus.key("forecasts", next(iter(data)), "4h")

    def both_joined() -> bool:
        try:
            return len(r.xinfo_consumers(first, "decide")) == 2
        except Exception:  # noqa: BLE001 (the stream or group is not there yet)
            return False

    wait_until(both_joined)
    publish_forecasts(bus, data)
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("'decided': 0" not in o for o in outs), f"one process did all the work: {outs}"
    want = single_process(data, tmp_path / "single")
    with psycopg.connect(pg_state) as conn:
        for symbol in data:
            dec = conn.execute("SELECT open_ms, bar, regime, forecast, signal, position, value, "
                               "model FROM decisions WHERE symbol = %s AND timeframe = '4h' "
                               "ORDER BY open_ms", (symbol,)).fetchall()
            fills = conn.execute("SELECT open_ms, bar, size, price, commission FROM fills WHERE "
                                 "symbol = %s ORDER BY open_ms", (symbol,)).fetchall()
            assert [d[1] for d in dec] == list(range(n)), "decided twice, skipped or unordered"
            assert [tuple(d) for d in dec] == want[symbol][0], symbol
            assert [tuple(f) for f in fills] == want[symbol][1], symbol
            assert len(fills) > 2
    r = connect(bus.url)
    for symbol in data:
        assert r.xpending(bus.key("forecasts", symbol, "4h"), "decide")["pending"] == 0
    # --export: the database's decisions and fills as a state folder's CSVs, byte for byte
    out = tmp_path / "export"
    res = subprocess.run([sys.executable, str(REPO / "runners" / "live.py"), "--state", pg_state,
                          "--export", str(out)], cwd=REPO, env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"SYM0USDT 4h: {n} decisions" in res.stdout
    for symbol in data:
        for name in ("decisions.csv", "fills.csv"):
            got = (out / f"{symbol}_4h" / name).read_text()
            assert got == (tmp_path / "single" / symbol / name).read_text(), (symbol, name)


@pytest.mark.parametrize("batch, batches", [(64, 1), (3, 4)])
def test_a_burst_of_markets_is_one_batch(bus, tmp_path, batch, batches):
    """One candle of each of 10 markets at once (a candle close) is read in one call and
    decided as one batch (``--batch`` caps the markets a read takes: 3 + 3 + 3 + 1),
    acknowledged together, decisions as the single-process run's."""
    data = synthetic_forecasts(10, 1)
    publish_forecasts(bus, data)
    cfg = BusConfig(bus.url, prefix=bus.prefix, consumer="d1", stop_after=1, block_ms=50,
                    batch=batch)
    done = run_decide(cfg, StrategyConfig(), str(tmp_path / "state"),
                      [(s, "4h") for s in data])
    assert done.counts["decided"] == 10 and done.counts["handled"] == 10
    assert done.counts["batches"] == batches, done.counts
    want = single_process(data, tmp_path / "single")
    for symbol in data:
        eng = done.engine((symbol, "4h"))
        got = LiveEngine(None, StrategyConfig(), symbol, "4h", tmp_path / "state" /
                         f"{symbol}_4h", Warmup(first_ready=1, history=5), BAR)
        assert (got.state.decisions(), got.state.fills()) == want[symbol], symbol
        got.close()
        assert eng.acct["bars"] == 1
    with connect(bus.url) as r:
        for symbol in data:
            assert r.xpending(bus.key("forecasts", symbol, "4h"), "decide")["pending"] == 0


def warm_candles(run: dict, extra: int) -> tuple:
    """The bundle's forecaster, its warm-up length n and the run's first n + extra candles."""
    from bt_lstm.models.forecast import load_forecaster

    fc = load_forecaster(str(run["bundle"]), no_skill="trade")
    n = bundle_warmup(fc).history
    return fc, n, candles_of(run["candles"])[:n + extra]


def publish_candles(r, bus: BusConfig, candles: list, first_decided: int,
                    bad_at: int | None = None) -> str:
    """BTCUSDT 4h candles on the stream, decided from index ``first_decided`` (the one at
    ``bad_at`` with its high below its low); the stream's key."""
    key = bus.key("candles", "BTCUSDT", "4h")
    r.sadd(bus.key("markets"), "BTCUSDT:4h")
    for i, c in enumerate(candles):
        fields = candle_fields(c, i >= first_decided)
        if i == bad_at:
            fields["h"] = repr(c[3] * 0.5)  # high below low
        r.xadd(key, fields, id=f"{c[0]}-0")
    return key


def assert_in_process_forecasts(fc, n: int, candles: list, got: list) -> None:
    """Each forecast entry as the in-process engine's: from the last n of ``candles`` up to it."""
    one = LocalForecasts(fc)
    for entry_id, f in got:
        t = int(entry_id.split("-")[0])
        regime, want, model = one([c for c in candles if c[0] <= t][-n:])
        assert int(f["regime"]) == regime and f["model"] == model
        np.testing.assert_allclose(float(f["f"]), want, rtol=1e-6, atol=1e-12)


def test_the_engine_dead_letters_a_malformed_candle_and_forecasts_the_rest(main_run, bus):
    """A burst with a malformed candle (high below low) among good ones: the bad one goes to
    deadletter:engine with its reason, every good one gets its forecast, computed as the
    in-process engine would on the history without the bad candle."""
    fc, n, candles = warm_candles(main_run, 6)
    with connect(bus.url) as r:
        key = publish_candles(r, bus, candles, n, bad_at=n + 2)
        cfg = BusConfig(bus.url, prefix=bus.prefix, consumer="e1", stop_after=5, block_ms=50)
        role = run_engine(cfg, str(main_run["bundle"]), None, [("BTCUSDT", "4h")], "trade", None)
        dead = r.xrange(bus.key("deadletter:engine"))
        got = r.xrange(bus.key("forecasts", "BTCUSDT", "4h"))
        assert r.xpending(key, "engine")["pending"] == 0
    assert [f["id"] for _, f in dead] == [f"{candles[n + 2][0]}-0"]
    assert "inconsistent candle" in dead[0][1]["reason"]
    good = [c for i, c in enumerate(candles) if i != n + 2]
    decided = [c for c in good if c[0] >= candles[n][0]]
    assert [i for i, _ in got] == [f"{c[0]}-0" for c in decided]
    assert role.counts["forecasts"] == 5 and role.counts["deadletter"] == 1
    assert_in_process_forecasts(fc, n, good, got)


def test_an_engine_whose_cache_runs_ahead_forecasts_from_the_right_history(main_run, bus):
    """An engine starts on a stream whose candles were never forecast (its cache read ahead,
    up to the stream's top), then gets a candle past that top: every candle from the first
    decided one is forecast, in order, each from its own warm-up history (read back where
    the cache is ahead, extended where it is not), as the in-process engine would."""
    from bt_lstm.live.roles import ForecastRole

    fc, n, candles = warm_candles(main_run, 8)
    with connect(bus.url) as r:
        key = publish_candles(r, bus, candles[:n + 6], n)
        role = ForecastRole(r, BusConfig(bus.url, prefix=bus.prefix), str(main_run["bundle"]),
                            None, [("BTCUSDT", "4h")], "trade", None)
        role.streams()  # loads the bundle, reads the history up to the top (n + 5)
        assert int(role.cache[("BTCUSDT", "4h")][-1, 0]) == candles[n + 5][0]
        for c in candles[n + 6:]:
            r.xadd(key, candle_fields(c, True), id=f"{c[0]}-0")
        last = candles[-1]
        assert role.handle([(key, f"{last[0]}-0", candle_fields(last, True))]) == {}
        got = r.xrange(bus.key("forecasts", "BTCUSDT", "4h"))
    assert [i for i, _ in got] == [f"{c[0]}-0" for c in candles[n:]]
    assert_in_process_forecasts(fc, n, candles, got)


def test_a_malformed_entry_is_dead_lettered_and_blocks_nothing(bus, tmp_path):
    data = synthetic_forecasts(1, 6)
    (symbol, rows), = data.items()
    r = connect(bus.url)
    key = bus.key("forecasts", symbol, "4h")
    r.sadd(bus.key("markets"), f"{symbol}:4h")
    for i, (candle, fc) in enumerate(rows):
        fields = forecast_fields(candle, fc, time.time())
        if i == 2:
            fields["f"] = "not a number"
            r.xadd(key, {"junk": "1"}, id=f"{rows[1][0][0]}-5")  # not an <open_ms>-0 id
        if i == 4:
            del fields["c"]
        r.xadd(key, fields, id=f"{candle[0]}-0")
    cfg = BusConfig(bus.url, prefix=bus.prefix, consumer="d1", stop_after=4, block_ms=50)
    done = run_decide(cfg, StrategyConfig(), str(tmp_path / "state"), [(symbol, "4h")])
    assert done.counts["decided"] == 4  # the entries around the bad ones were not held up
    reasons = {f["id"]: f["reason"] for _, f in r.xrange(bus.key("deadletter:decide"))}
    bad = [f"{rows[1][0][0]}-5", f"{rows[2][0][0]}-0", f"{rows[4][0][0]}-0"]
    assert set(reasons) == set(bad), reasons
    assert "<open_ms>-0" in reasons[bad[0]] and "'f'" in reasons[bad[1]]
    assert "'c'" in reasons[bad[2]]
    assert r.xpending(key, "decide")["pending"] == 0
    st = bus_status(r, bus)
    assert st["deadletter"][bus.key("deadletter:decide")] == 3
    assert "dead letters" in format_status(st)


def test_a_dropped_redis_connection_is_resumed(bus, tmp_path):
    """The decide process's connections are killed (CLIENT KILL) mid-run: it reconnects and
    goes on from its group's position; every candle decided once."""
    data = synthetic_forecasts(1, 40)
    (symbol, rows), = data.items()
    publish_forecasts(bus, {symbol: rows[:20]})
    name = f"drop{uuid.uuid4().hex[:6]}"
    port = test_live.free_port()
    d = role(bus, "--role", "decide", "--state", str(tmp_path / "state"), "--symbol", symbol,
             "--timeframe", "4h", "--consumer", name, "--stop-after", "40", "--quiet",
             "--status-port", str(port), stdout=subprocess.PIPE, text=True)
    r = connect(bus.url)
    key = bus.key("forecasts", symbol, "4h")
    try:
        wait_until(lambda: any(g["name"] == "decide" and g["entries-read"] == 20
                               and not g["pending"] for g in r.xinfo_groups(key)))
        # the decide role's status page: decisions per market, and pending and lag per group
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=10) as resp:
            page = json.loads(resp.read())
        assert page["markets"] == [{"market": f"{symbol} 4h", "decided": 20,
                                    "position": page["markets"][0]["position"],
                                    "last_ms": rows[19][0][0]}]
        group = page["bus"]["streams"][key]["groups"]["decide"]
        assert group["pending"] == 0 and group["lag"] == 0 and group["consumers"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert 'id="bus"' in resp.read().decode()
        mine = [c for c in r.client_list() if c.get("name") == f"bt-lstm-decide-{name}"]
        assert mine, "the decide process's connection is not named"
        for c in mine:
            r.client_kill_filter(_id=c["id"])
        time.sleep(0.3)
        publish_forecasts(bus, {symbol: rows[20:]})
        out, _ = d.communicate(timeout=120)
    finally:
        if d.poll() is None:
            d.kill()
    assert d.returncode == 0, out
    st = LiveEngine(None, StrategyConfig(), symbol, "4h", tmp_path / "state" / f"{symbol}_4h",
                    Warmup(first_ready=1, history=1), BAR).state
    assert [x[1] for x in st.decisions()] == list(range(40))
    assert r.xpending(key, "decide")["pending"] == 0


def test_a_state_folder_of_the_first_live_release_is_migrated(tmp_path):
    """The single-market SQLite schema (account row id 1, candles keyed by open time) moves to
    the market-keyed schema the PostgreSQL state shares; nothing is lost."""
    import sqlite3

    folder = tmp_path / "old"
    folder.mkdir()
    conn = sqlite3.connect(folder / "state.sqlite")
    conn.executescript("""
CREATE TABLE candles (open_ms INTEGER PRIMARY KEY, open REAL, high REAL, low REAL, close REAL,
    volume REAL);
CREATE TABLE decisions (symbol TEXT, timeframe TEXT, open_ms INTEGER, bar INTEGER,
    regime INTEGER, forecast REAL, signal INTEGER, position REAL, value REAL, model TEXT,
    PRIMARY KEY (symbol, timeframe, open_ms));
CREATE TABLE fills (symbol TEXT, timeframe TEXT, open_ms INTEGER, bar INTEGER, size REAL,
    price REAL, commission REAL, PRIMARY KEY (symbol, timeframe, open_ms));
CREATE TABLE account (id INTEGER PRIMARY KEY CHECK (id = 1), cash REAL, position REAL,
    pending REAL, last_ms INTEGER, first_ms INTEGER, bars INTEGER, rounded_to_zero INTEGER,
    rejected INTEGER);
CREATE TABLE gaps (from_ms INTEGER, to_ms INTEGER, reported_at TEXT);
INSERT INTO candles VALUES (1000, 1, 2, 0.5, 1.5, 3);
INSERT INTO candles VALUES (2000, 1.5, 2, 1, 1.8, 4);
INSERT INTO decisions VALUES ('BTCUSDT', '4h', 2000, 0, 1, 0.01, 1, 0, 10000, 'm');
INSERT INTO account VALUES (1, 10000, 0, 5, 2000, 2000, 1, 0, 0);
INSERT INTO gaps VALUES (10, 20, 'x');
""")
    conn.commit()
    conn.close()
    from bt_lstm.live.state import LiveState

    st = LiveState(folder, "BTCUSDT", "4h")
    assert st.account() == {"cash": 10000, "position": 0, "pending": 5, "last_ms": 2000,
                            "first_ms": 2000, "bars": 1, "rounded_to_zero": 0, "rejected": 0}
    assert st.recent_candles(5) == [(1000, 1.0, 2.0, 0.5, 1.5, 3.0), (2000, 1.5, 2.0, 1.0, 1.8,
                                                                      4.0)]
    assert st.gaps() == [(10, 20)] and len(st.decisions()) == 1
    st.close()
    again = LiveState(folder, "BTCUSDT", "4h")  # opening again changes nothing
    assert again.account()["bars"] == 1
    again.close()


@pytest.mark.parametrize("args, says", [
    (["--role", "engine", "--batch", "0"], "--batch 0"),
    (["--role", "decide", "--retention", "ten"], "--retention 'ten'"),
    (["--role", "engine", "--bus", ""], "need --bus"),
    ([], "--bus needs --role"),
    (["--export", "out", "--state", "live/"], "--export reads a --state postgresql://"),
])
def test_bad_bus_flags_are_one_clear_line(args, says):
    """Checked before anything connects: one line naming the flag, exit 2, no traceback."""
    cmd = [sys.executable, str(REPO / "runners" / "live.py"), "--bus",
           "redis://127.0.0.1:1/0", *args]
    res = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
