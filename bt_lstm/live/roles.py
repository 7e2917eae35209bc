"""The three roles of the live pipeline split over Redis Streams (``--bus``); the ingest's code
is in ``ingest.py``.

- ingest: the kline feed (``feed.KlineFeed``, unchanged) publishes each closed candle to
  ``candles:<S>:<tf>`` with id ``<open_ms>-0``; candles before the first decided one are
  history (``d=0``), published so any engine can rebuild the warm-up from the stream.
- engine: forecasts each decided candle with ``LocalForecasts`` on the last ``warmup.history``
  candles of the stream up to it (so every engine gives the in-process forecast), and appends it
  to ``forecasts:<S>:<tf>`` in candle order: a missing predecessor is forecast first (by whoever
  gets there; Redis refuses the second copy), so the stream never has a hole.
- decide: ``LiveEngine.apply`` (the in-process step) under the market's account row lock, for
  every forecast after the account's last decided candle up to the entry; then ``XACK``.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import redis

from bt_lstm.config import StrategyConfig
from bt_lstm.live.bus import (
    BusConfig,
    Consumer,
    MalformedEntry,
    bus_status,
    connect,
    forecast_fields,
    is_stale,
    markets,
    open_ms_of,
    parse_candle,
    parse_forecast,
    trim_args,
)
from bt_lstm.live.engine import LATENCIES_KEPT, LiveEngine, LocalForecasts
from bt_lstm.live.klines import Warmup, bundle_warmup, timeframe_ms
from bt_lstm.trading.values import Candle, Forecast

logger = logging.getLogger(__name__)

STATUS_EVERY_S = 2.0  # the decide role's status.json per market

# -- engine ----------------------------------------------------------------------------------
def _parsed(got: Any) -> list[tuple[Candle, bool, float]]:
    """The candle entries read back from a stream; a malformed one is left out (its own
    delivery dead-letters it)."""
    out = []
    for entry_id, fields in got:
        try:
            out.append(parse_candle(entry_id, fields))
        except MalformedEntry:
            continue
    return out


def _candles(got: Any) -> list[Candle]:
    return [c for c, _, _ in _parsed(got)]


def _by_market(cfg: BusConfig, entries: list[tuple[str, str, dict]],
               parse: Callable[[str, dict], tuple]
               ) -> tuple[dict[tuple[str, str], list[tuple]], dict[tuple[str, str], str]]:
    """A batch parsed: market -> its entries parsed (in order), and {(stream, id): reason} of
    the malformed ones (the consumer dead-letters them)."""
    out: dict[tuple[str, str], list[tuple]] = {}
    bad: dict[tuple[str, str], str] = {}
    for stream, entry_id, fields in entries:
        try:
            row = parse(entry_id, fields)
        except MalformedEntry as exc:
            bad[(stream, entry_id)] = str(exc)
            continue
        out.setdefault(cfg.market_of(stream), []).append(row)
    return out, bad


def find_bundles(models: str | None, models_root: str | None,
                 wanted: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Market -> bundle folder: ``--models`` for every market, or ``--models-root`` holding
    ``<SYMBOL>_<tf>/`` (a bundle: its manifest.json) per market."""
    if models:
        return {m: models for m in wanted}
    out = {}
    for symbol, tf in wanted:
        folder = Path(models_root) / f"{symbol}_{tf}"
        if (folder / "manifest.json").is_file():
            out[(symbol, tf)] = str(folder)
    return out


class ForecastRole:
    """The engine role: candle entries in, forecast entries out (in candle order)."""

    def __init__(self, r: redis.Redis, cfg: BusConfig, models: str | None,
                 models_root: str | None, only: list[tuple[str, str]] | None,
                 no_skill: str, skill_p: float | None) -> None:
        self.r, self.cfg, self.only = r, cfg, only
        self.models, self.models_root = models, models_root
        self.no_skill, self.skill_p = no_skill, skill_p
        self.loaded: dict[str, tuple[LocalForecasts, Warmup]] = {}
        self.bundles: dict[tuple[str, str], str] = {}
        self.cache: dict[tuple[str, str], np.ndarray] = {}  # market -> its last candles
        self.counts = {"forecasts": 0, "duplicates": 0, "history": 0}

    def streams(self) -> list[str]:
        """The candle streams this engine reads (every market with a bundle, or ``--symbol``'s),
        loading the bundles it has not loaded yet."""
        wanted = self.only or markets(self.r, self.cfg)
        self.bundles = find_bundles(self.models, self.models_root, wanted)
        for path in set(self.bundles.values()) - set(self.loaded):
            from bt_lstm.models.forecast import load_forecaster

            kw = {} if self.skill_p is None else {"skill_p": self.skill_p}
            fc = load_forecaster(path, no_skill=self.no_skill, **kw)
            self.loaded[path] = (LocalForecasts(fc), bundle_warmup(fc))
        for m in self.bundles.keys() - self.cache.keys():
            self._prefetch(m)
        return [self.cfg.key("candles", *m) for m in sorted(self.bundles)]

    def _prefetch(self, market: tuple[str, str]) -> None:
        """A new market's history up to its stream's last candle, read now rather than when
        its first candle waits (772 entries for a default bundle: ~0.1 s, once per market)."""
        top = self.r.xrevrange(self.cfg.key("candles", *market), count=1)
        if top:
            self.history(market, open_ms_of(top[0][0]),
                         self.loaded[self.bundles[market]][1].history)

    def done(self) -> bool:
        """With ``stop_after``: every market has that many forecasts and nothing pending in the
        engine group."""
        n = self.cfg.stop_after
        if n is None or not self.bundles:
            return False
        # and nothing left pending in the group (a dead engine's entries reclaimed, acked)
        return all(self.r.xlen(self.cfg.key("forecasts", *m)) >= n
                   and self.r.xpending(self.cfg.key("candles", *m), "engine")["pending"] == 0
                   for m in self.bundles)

    def history(self, market: tuple[str, str], t: int, n: int,
                fetched: list[Candle] | None = None, since: int | None = None) -> np.ndarray:
        """The last ``n`` candles of the stream up to and including ``t``, (<= n, 6): the
        cached tail extended with ``fetched`` (every candle of the stream after ``since``, up
        to ``t`` at least) when the tail is not older than ``since``, else with what the
        stream holds after it, or read back from the stream. Candles are the rows the
        in-process engine's ``frame_of`` makes of its history (float64)."""
        key = self.cfg.key("candles", *market)
        h = self.cache.get(market)
        if h is not None and h[-1, 0] < t:
            tail = int(h[-1, 0])
            if fetched is not None and (since is None or since <= tail):
                new = [c for c in fetched if tail < c.open_ms <= t]
            else:
                got = self.r.xrange(key, min=f"({tail}-0", max=f"{t}-0", count=n + 1)
                new = _candles(got) if len(got) <= n else []
            h = np.concatenate([h, np.asarray(new, dtype=float).reshape(-1, 6)])[-n:]
        if h is None or not len(h) or h[-1, 0] != t:
            got = self.r.xrevrange(key, max=f"{t}-0", count=n)
            h = np.asarray(_candles(reversed(got)), dtype=float).reshape(-1, 6)
        if len(h):
            self.cache[market] = h
        return h

    def handle(self, entries: list[tuple[str, str, dict]]) -> dict[tuple[str, str], str]:
        """A batch of candle entries: every decided candle of its market after the market's
        last forecast, up to the batch's newest, is forecast (a predecessor held by another
        engine too: forecasts stay in candle order), the networks run once per batch, and the
        forecasts appended in one pipeline (Redis refuses a second copy)."""
        parsed, bad = _by_market(self.cfg, entries, parse_candle)
        taken = {m: [c.open_ms for c, decide, _ in rows if decide] for m, rows in parsed.items()}
        self.counts["history"] += sum(not decide for rows in parsed.values()
                                      for _, decide, _ in rows)
        ms = sorted(m for m, ts in taken.items() if ts)
        newest = {m: max(taken[m]) for m in ms}
        if not ms:
            return bad
        pipe = self.r.pipeline(transaction=False)
        for m in ms:
            pipe.xrevrange(self.cfg.key("forecasts", *m), count=1)
        tops = [open_ms_of(top[0][0]) if top else None for top in pipe.execute()]
        lows = []  # read the candles after the last forecast, and after the cached tail
        for m, top_ms in zip(ms, tops):
            h = self.cache.get(m)
            lows.append(top_ms if h is None or top_ms is None else min(top_ms, int(h[-1, 0])))
            pipe.xrange(self.cfg.key("candles", *m),
                        min="-" if lows[-1] is None else f"({lows[-1]}-0", max=f"{newest[m]}-0")
        jobs = []  # (market, candle, publish time, history)
        for m, top_ms, lo, got in zip(ms, tops, lows, pipe.execute()):
            # forecast before (a redelivery, or a successor was forecast with it)
            self.counts["duplicates"] += sum(top_ms is not None and t <= top_ms
                                             for t in taken[m])
            # parsed: candles to decide, and those after the cached tail (the first forecast of
            # a market reads its whole stream back, history mostly)
            h = self.cache.get(m)
            tail = -1 if h is None else int(h[-1, 0])
            fetched = _parsed([(i, f) for i, f in got
                               if f.get("d", "1") != "0" or int(i.partition("-")[0]) > tail])
            # every candle of the stream after the cached tail (without a cache: after lo)
            candles = [c for c, _, _ in fetched if c.open_ms > tail]
            since = lo if h is None else tail
            todo = [(c, ts) for c, d, ts in fetched if d and (top_ms is None or c.open_ms > top_ms)]
            n = self.loaded[self.bundles[m]][1].history
            jobs += [(m, c, ts, self.history(m, c.open_ms, n, candles, since)) for c, ts in todo]
        for path in {self.bundles[m] for m, _, _, _ in jobs}:
            mine = [j for j in jobs if self.bundles[j[0]] == path]
            fcs = self.loaded[path][0].many([hist for _, _, _, hist in mine])
            for (m, c, ts, _), fc in zip(mine, fcs):
                pipe.xadd(self.cfg.key("forecasts", *m), forecast_fields(c, fc, ts),
                          id=f"{c.open_ms}-0", **trim_args(self.cfg.retention, c.open_ms))
        for res in pipe.execute(raise_on_error=False):
            if isinstance(res, Exception):
                if not is_stale(res):
                    raise res
                self.counts["duplicates"] += 1  # another engine got there first
            else:
                self.counts["forecasts"] += 1
        return bad


def run_engine(cfg: BusConfig, models: str | None, models_root: str | None,
               only: list[tuple[str, str]] | None, no_skill: str,
               skill_p: float | None, torch_threads: int = 1) -> ForecastRole:
    """Run the engine role until done: read candle entries in batches, forecast each with the
    backtest's Forecaster on its warm-up history read back from the stream, append the
    forecasts in candle order, acknowledge. Returns the role with its counts."""
    from bt_lstm.models.training import configure_threads

    # one window per forecast gains nothing from intra-op threads, and engines share cores:
    # several spinning thread pools on a busy machine made each LSTM call ~10x slower
    configure_threads(torch_threads)
    r = connect(cfg.url, cfg.block_ms, f"bt-lstm-engine-{cfg.consumer}")
    role = ForecastRole(r, cfg, models, models_root, only, no_skill, skill_p)
    consumer = Consumer(r, cfg, "engine", role.streams, role.handle, role.done)
    consumer.run()
    role.counts.update(consumer.counts)
    return role


# -- decide ----------------------------------------------------------------------------------
class DecideRole:
    """The decide role: forecast entries in, decisions and fills committed to the state."""

    def __init__(self, r: redis.Redis, cfg: BusConfig, strategy: StrategyConfig, state: str,
                 only: list[tuple[str, str]] | None, latency_out: str | None = None) -> None:
        self.r, self.cfg, self.strategy, self.only = r, cfg, strategy, only
        self.latency_out = latency_out
        self.pg = self.pg_batch = None
        if state.startswith(("postgresql://", "postgres://")):
            from bt_lstm.live.pgstate import PgBatch, connect_pg

            self.pg = connect_pg(state)
            self.pg_batch = PgBatch(self.pg)
        self.state = state
        self.engines: dict[tuple[str, str], LiveEngine] = {}
        self.commits = 0
        # candle XADD -> decision committed (s), the last LATENCIES_KEPT (the file has all)
        self.latencies: deque = deque(maxlen=LATENCIES_KEPT)
        self.counts = {"decided": 0, "duplicates": 0}
        self.status_r: redis.Redis | None = None
        self.status_at: dict[tuple[str, str], float] = {}  # market -> status.json written
        self.consumer: Consumer | None = None  # its reconnect and dead-letter counts

    def engine(self, market: tuple[str, str]) -> LiveEngine:
        """The market's engine on the shared state (SQLite folder or PostgreSQL), made on first
        use."""
        eng = self.engines.get(market)
        if eng is None:
            symbol, tf = market
            bar, nohist = timeframe_ms(tf), Warmup(first_ready=0, history=1)
            if self.pg is not None:
                from bt_lstm.live.pgstate import PgState

                eng = LiveEngine(None, self.strategy, symbol, tf, None, nohist, bar,
                                 state=PgState(self.pg, symbol, tf, self.pg_batch))
            else:
                # tick() writes every market's status.json, between bursts
                eng = LiveEngine(None, self.strategy, symbol, tf,
                                 Path(self.state) / f"{symbol}_{tf}", nohist, bar,
                                 status_each_commit=False)
            self.engines[market] = eng
        return eng

    def streams(self) -> list[str]:
        """The forecast streams this process decides (every market, or ``--symbol``'s)."""
        for m in self.only or markets(self.r, self.cfg):
            self.engine(m)
        return [self.cfg.key("forecasts", *m) for m in sorted(self.engines)]

    def done(self) -> bool:
        """With ``stop_after``: every market's account has decided that many candles."""
        n = self.cfg.stop_after
        if n is None or not self.engines:
            return False
        return all((e.state.account() or {"bars": 0})["bars"] >= n
                   for e in self.engines.values())

    def handle(self, entries: list[tuple[str, str, dict]]) -> dict[tuple[str, str], str]:
        """A batch of forecast entries: for each market, every forecast after the account's
        last decided candle up to the batch's newest (one held by another decide process
        first: decisions stay in candle order), each applied under the account's row lock;
        on PostgreSQL the whole batch in one transaction (markets locked in sorted order, so
        two decide processes never deadlock)."""
        parsed, bad = _by_market(self.cfg, entries, parse_forecast)
        # market -> open time -> publish time
        taken = {m: {c.open_ms: ts for c, _, ts in rows} for m, rows in parsed.items()}
        ms = sorted(taken)
        lasts = []
        pipe = self.r.pipeline(transaction=False)
        for m in ms:
            acct = self.engine(m).state.account()
            lasts.append(None if acct is None else acct["last_ms"])
            pipe.xrange(self.cfg.key("forecasts", *m),
                        min="-" if lasts[-1] is None else f"({lasts[-1]}-0",
                        max=f"{max(taken[m])}-0")
        got = pipe.execute() if ms else []
        done: list[tuple] = []  # (market, open time, publish time) of each decision committed
        with self.pg_batch.transaction() if self.pg_batch is not None else nullcontext():
            for m, last, entries in zip(ms, lasts, got):
                self.counts["duplicates"] += sum(last is not None and t <= last
                                                 for t in taken[m])
                eng = self.engine(m)
                for pid, pf in entries:
                    try:
                        candle, fc, _ = parse_forecast(pid, pf)
                    except MalformedEntry:
                        continue  # its own delivery dead-letters it
                    if self._apply(eng, candle, fc):
                        done.append((m, candle.open_ms, taken[m].get(candle.open_ms)))
        now = time.time()  # committed (PostgreSQL: the batch's one commit)
        timed = [(m, t, ts) for m, t, ts in done if ts is not None and ts == ts]
        self.latencies.extend(now - ts for _, _, ts in timed)
        lines = [json.dumps([*m, t, ts, now]) for m, t, ts in timed]
        if lines and self.latency_out:
            # appended per batch (before its XACK): a killed process keeps what it committed
            with open(self.latency_out, "a") as fh:
                fh.write("\n".join(lines) + "\n")
        return bad

    def _apply(self, eng: LiveEngine, candle: Candle, fc: Forecast) -> bool:
        if not eng.apply(candle, fc, candle.open_ms, locked=True):
            self.counts["duplicates"] += 1
            return False
        self.counts["decided"] += 1
        self.commits += 1
        return True

    def tick(self, idle: bool) -> None:
        """After every read: status.json (state folders), with the bus's lag and pending
        counts of its streams, of every market whose file is ``STATUS_EVERY_S`` old; while
        forecasts keep coming, of the oldest one only (~1 ms each: kept out of a burst's
        way)."""
        if self.pg is not None:
            return
        now = time.monotonic()
        due = sorted((self.status_at.get(m, 0.0), m) for m in self.engines)
        for at, m in due if idle else due[:1]:
            if now - at < STATUS_EVERY_S:
                break
            e = self.engines[m]
            e.acct = e.state.account() or e.acct
            e.feed_health["bus"] = bus_status(self.r, self.cfg, [m])
            e.write_status()
            self.status_at[m] = now

    def status(self) -> dict[str, Any]:
        """The status page's figures (its own Redis connection: it runs on the page's thread):
        every market's last decision and account, and the bus's length, pending and lag per
        stream and group."""
        if self.status_r is None:
            self.status_r = connect(self.cfg.url, self.cfg.block_ms,
                                    f"bt-lstm-decide-status-{self.cfg.consumer}")
        counts = self.consumer.counts if self.consumer is not None else {}
        markets = []
        for (symbol, tf), e in sorted(self.engines.items()):
            acct = e.acct or {}
            markets.append({"market": f"{symbol} {tf}", "decided": acct.get("bars", 0),
                            "position": acct.get("position", 0.0), "last_ms": acct.get("last_ms")})
        return {"symbol": f"{len(markets)} markets (decide {self.cfg.consumer})",
                "timeframe": "", "last_candle": {}, "position": "- (per market below)",
                "decided": sum(m["decided"] for m in markets), "equity": [],
                "feed": {"connected": True, "reconnects": counts.get("reconnects", 0),
                         "gaps": [], "ignored": self.counts["duplicates"],
                         "malformed": counts.get("deadletter", 0)},
                "markets": markets, "bus": bus_status(self.status_r, self.cfg)}

    def close(self) -> None:
        """Close every market's engine and state."""
        for e in self.engines.values():
            e.close()
        if self.pg is not None:
            self.pg.close()
        for r in (self.r, self.status_r):
            if r is not None:
                r.close()


def run_decide(cfg: BusConfig, strategy: StrategyConfig, state: str,
               only: list[tuple[str, str]] | None, latency_out: str | None = None,
               status_port: int | None = None) -> DecideRole:
    """Run the decide role until done: each forecast filled, decided and committed in one
    transaction (the account row locked), then acknowledged; optionally the status page and
    the latency file (JSON lines ``[symbol, timeframe, open_ms, XADD time, commit time]``,
    appended after each batch's commits). Returns the role."""
    r = connect(cfg.url, cfg.block_ms, f"bt-lstm-decide-{cfg.consumer}")
    role = DecideRole(r, cfg, strategy, state, only, latency_out)
    consumer = role.consumer = Consumer(r, cfg, "decide", role.streams, role.handle, role.done,
                                        role.tick)
    page = None
    if status_port is not None:
        from bt_lstm.live.status import StatusServer

        page = StatusServer(role.status, status_port)
        logger.info("status page: http://127.0.0.1:%d/", page.port)
    try:
        consumer.run()
        role.counts.update(consumer.counts)
        role.status_at.clear()
        role.tick(True)  # every market's final status
    finally:
        if page is not None:
            page.close()
        role.close()
    return role
