"""Redis Streams plumbing of the split live pipeline: stream names, entry formats, the
consumer-group loop (own pending entries, then reclaimed ones, then new ones; acknowledged only
after the handler committed), the dead-letter stream, reconnects and ``--status``.

Streams (``<prefix>`` empty by default): ``candles:<SYMBOL>:<tf>`` (group ``engine``),
``forecasts:<SYMBOL>:<tf>`` (group ``decide``), ``deadletter:<role>``; the set ``markets`` holds
``<SYMBOL>:<tf>`` of every market an ingest process publishes; ``meta:<SYMBOL>:<tf>`` its
first decided candle. Entry ids are ``<open_ms>-0``: Redis itself refuses a candle (or a
forecast) not after the stream's last one, so nothing is published twice.
"""
from __future__ import annotations

import gc
import json
import logging
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from bt_lstm.live.klines import KlineError, _check_ohlc
from bt_lstm.trading.values import Candle, Forecast

logger = logging.getLogger(__name__)

GROUPS = {"candles": "engine", "forecasts": "decide"}
_AGE = re.compile(r"^(\d+)([mhdw])$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
STALE_ID = "equal or smaller than the target stream top item"


class MalformedEntry(ValueError):
    """A stream entry that cannot be read: dead-lettered with this reason, never retried."""


@dataclass
class BusConfig:
    """Where the bus lives and how a role reads it: Redis URL, key prefix, this consumer's name,
    when entries of dead consumers are reclaimed, stream retention, batch size and the
    blocking read's timeout."""
    url: str
    prefix: str = ""
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    claim_idle_ms: int = 30_000  # reclaim entries pending this long with another consumer
    retention: str = "100000"  # entries kept per stream (MAXLEN ~), or an age: 90d (MINID ~)
    batch: int = 64
    block_ms: int = 200
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    stop_after: int | None = None  # role-specific: stop once every market has this many
    freeze_gc: bool = False  # a role's own process (the CLI): gc.freeze() once started

    def key(self, kind: str, symbol: str = "", timeframe: str = "") -> str:
        """The Redis key of stream ``kind`` (``candles``, ``forecasts``, ...) of one market, or a
        global key without a market: ``<prefix><kind>[:<symbol>:<timeframe>]``."""
        return f"{self.prefix}{kind}" + (f":{symbol}:{timeframe}" if symbol else "")

    def market_of(self, stream: str) -> tuple[str, str]:
        """``(symbol, timeframe)`` of a market stream's key."""
        _, symbol, timeframe = stream[len(self.prefix):].split(":")
        return symbol, timeframe


def parse_retention(text: str) -> tuple[str, int]:
    """``"100000"`` -> ("maxlen", 100000); ``"90d"`` -> ("age", 90 days in ms)."""
    s = str(text).strip()
    if s.isdigit() and int(s) > 0:
        return "maxlen", int(s)
    m = _AGE.match(s)
    if not m:
        raise ValueError(f"--retention {text!r}: give entries per stream (e.g. 100000) or an "
                         f"age such as 30d, 12h, 2w")
    return "age", int(m.group(1)) * _UNIT_MS[m.group(2)]


def trim_args(retention: str, open_ms: int) -> dict[str, Any]:
    """XADD's trim arguments: ``MAXLEN ~ n`` or ``MINID ~ open_ms - age``."""
    kind, n = parse_retention(retention)
    if kind == "maxlen":
        return {"maxlen": n, "approximate": True}
    return {"minid": f"{max(open_ms - n, 0)}-0", "approximate": True}


def connect(url: str, block_ms: int = 200, name: str | None = None) -> redis.Redis:
    """A client; ``name`` (CLIENT SETNAME) shows the role and consumer in ``CLIENT LIST``."""
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                socket_timeout=block_ms / 1000 + 10, health_check_interval=30,
                                client_name=name)


def is_stale(exc: Exception) -> bool:
    """XADD refused an id not after the stream's top: the entry is there already."""
    return isinstance(exc, redis.ResponseError) and STALE_ID in str(exc)


# -- entries ---------------------------------------------------------------------------------
def _float(fields: dict, key: str) -> float:
    try:
        return float(fields[key])
    except KeyError:
        raise MalformedEntry(f"field {key!r} missing") from None
    except (TypeError, ValueError):
        raise MalformedEntry(f"field {key!r} is not a number: {fields[key]!r}") from None


def open_ms_of(entry_id: str) -> int:
    """A candle's open time from its entry id ``<open_ms>-0``; any other id raises
    ``MalformedEntry``."""
    ms, _, seq = entry_id.partition("-")
    if seq != "0" or not ms.isdigit():
        raise MalformedEntry(f"entry id {entry_id!r} is not <open_ms>-0")
    return int(ms)


def candle_fields(c: Candle, decide: bool, ts: float | None = None) -> dict[str, str]:
    """A candle as the fields of its stream entry: prices and volume as exact ``repr`` text,
    whether it is to be decided (history is not), and the publish time for the latency
    figures."""
    c = Candle._make(c)
    return {"o": repr(float(c.open)), "h": repr(float(c.high)), "l": repr(float(c.low)),
            "c": repr(float(c.close)), "v": repr(float(c.volume)), "d": "1" if decide else "0",
            "ts": repr(time.time() if ts is None else ts)}


def parse_candle(entry_id: str, fields: dict) -> tuple[Candle, bool, float]:
    """(candle, to be decided, publish time) of a candle entry (or of a forecast entry)."""
    if not fields:
        raise MalformedEntry("entry without fields (trimmed or deleted)")
    c = Candle(open_ms_of(entry_id), *(_float(fields, k) for k in "ohlcv"))
    if not all(math.isfinite(x) for x in c[1:]):
        raise MalformedEntry(f"candle with a value that is not finite: {c}")
    try:
        _check_ohlc(c)
    except KlineError as exc:
        raise MalformedEntry(str(exc)) from None
    if fields.get("d", "1") not in ("0", "1"):
        raise MalformedEntry(f"field 'd' is {fields.get('d')!r}, not 0 or 1")
    ts = _float(fields, "ts") if "ts" in fields else float("nan")
    return c, fields.get("d", "1") == "1", ts


def forecast_fields(c: Candle, fc: Forecast, ts: float) -> dict[str, str]:
    """A forecast's entry: the candle's fields plus regime, forecast and the model that made it."""
    regime, forecast, model = fc
    out = candle_fields(c, True, ts)
    out.update({"regime": str(int(regime)), "f": repr(float(forecast)), "model": model or ""})
    return out


def parse_forecast(entry_id: str, fields: dict) -> tuple[Candle, Forecast, float]:
    """``(candle, (regime, forecast, model), publish time)`` of a forecast entry; a missing or
    malformed field raises ``MalformedEntry`` (the entry goes to the dead letters)."""
    c, _, ts = parse_candle(entry_id, fields)
    try:
        regime = int(fields["regime"])
    except (KeyError, ValueError):
        raise MalformedEntry(f"field 'regime' missing or not an integer: "
                             f"{fields.get('regime')!r}") from None
    forecast = _float(fields, "f")  # nan: no forecast (the backtest's NaN as well)
    return c, Forecast(regime, forecast, fields.get("model", "")), ts


# -- the consumer loop -----------------------------------------------------------------------
Entry = tuple  # (stream, entry id, fields)


class Consumer:
    """One consumer of group ``group`` on the streams ``streams()`` returns.

    ``tick(idle)`` runs after every read (``idle``: it found nothing) and once at the end.
    ``handle(entries)`` takes a batch of entries (in id order within each stream) and commits
    their output; it returns ``{(stream, id): reason}`` for the malformed ones, which go to
    ``deadletter:<role>`` with their reason. Then the whole batch is acknowledged (one
    pipeline). Any error raised stops the process (the batch stays pending: a restart or
    another consumer takes it again).
    """

    def __init__(self, r: redis.Redis, cfg: BusConfig, role: str,
                 streams: Callable[[], list[str]],
                 handle: Callable[[list[Entry]], dict[tuple[str, str], str]],
                 done: Callable[[], bool],
                 tick: Callable[[bool], None] | None = None) -> None:
        self.r, self.cfg, self.role = r, cfg, role
        self.group = role
        self.streams_fn, self.handle, self.done, self.tick = streams, handle, done, tick
        self.streams: list[str] = []
        self._next = 0  # which streams the next read lists first (round robin)
        self._frozen = False
        self.counts = {"handled": 0, "deadletter": 0, "claimed": 0, "reconnects": 0,
                       "batches": 0}

    def _refresh(self) -> None:
        want = self.streams_fn()
        for s in want:
            if s not in self.streams:
                try:  # from the start of the stream: nothing published before we came is missed
                    self.r.xgroup_create(s, self.group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
        self.streams = want

    def _many(self, entries: list[Entry]) -> None:
        if not entries:
            return
        bad = self.handle([(s, i, f or {}) for s, i, f in entries])
        fields_of = {(s, i): f for s, i, f in entries} if bad else {}
        pipe = self.r.pipeline(transaction=False)
        for (stream, entry_id), reason in bad.items():
            fields = fields_of[(stream, entry_id)]
            logger.warning("%s %s dead-lettered: %s", stream, entry_id, reason)
            pipe.xadd(self.cfg.key(f"deadletter:{self.role}"),
                      {"stream": stream, "id": entry_id, "reason": reason,
                       "fields": json.dumps(fields or {}), "consumer": self.cfg.consumer},
                      maxlen=10_000, approximate=True)
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id, _ in entries:
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        pipe.execute()
        self.counts["deadletter"] += len(bad)
        self.counts["handled"] += len(entries)
        self.counts["batches"] += 1

    @staticmethod
    def _flat(resp: Any) -> list[Entry]:
        return [(stream, entry_id, fields) for stream, entries in resp or []
                for entry_id, fields in entries]

    def _own_pending(self) -> None:
        """What this consumer had read but not acknowledged before (a restart)."""
        cursor = {s: "0" for s in self.streams}
        while cursor and not self.done():
            resp = self.r.xreadgroup(self.group, self.cfg.consumer, cursor, count=self.cfg.batch)
            entries = self._flat(resp)
            self._many(entries)
            cursor = {s: i for s, i, _ in entries}  # the last one of each stream that had some

    def _claim(self) -> None:
        """Entries idle too long with another (dead) consumer."""
        for s in self.streams:
            start = "0-0"
            while not self.done():
                out = self.r.xautoclaim(s, self.group, self.cfg.consumer,
                                        self.cfg.claim_idle_ms, start_id=start,
                                        count=self.cfg.batch)
                start, entries = out[0], [(s, i, f) for i, f in out[1]]
                for _, entry_id, _ in entries:
                    logger.info("%s %s reclaimed from an idle consumer", s, entry_id)
                self.counts["claimed"] += len(entries)
                self._many(entries)
                if start == "0-0":
                    break

    def _loop(self) -> None:
        self._refresh()
        if self.cfg.freeze_gc and not self._frozen:
            # what the process loaded to start (torch, pandas, the bundles: ~10^6 objects) out
            # of the cyclic collector's way: a full collection over it paused a role for
            # 160-310 ms in the middle of a burst (measured in the bus benchmark)
            gc.collect()
            gc.freeze()
            self._frozen = True
        self._own_pending()
        self._claim()
        last_claim = last_refresh = time.monotonic()
        while not self.done():
            now = time.monotonic()
            if now - last_refresh > 2.0:
                self._refresh()
                last_refresh = now
            if now - last_claim > self.cfg.claim_idle_ms / 2000:
                self._claim()
                last_claim = now
            if not self.streams:
                time.sleep(self.cfg.block_ms / 1000)
                continue
            got = self._read_new()
            if self.tick is not None:
                self.tick(not got)

    def _read_new(self) -> int:
        """The next new entry of every stream (at most ``batch`` streams, taken in turn) as one
        batch: a burst (one candle of every market at once) is read in one call and handled
        together. When none has one, block on all of them; what woke the read is handled
        with whatever else of its burst has arrived meanwhile."""
        n = len(self.streams)
        order = [self.streams[(self._next + k) % n] for k in range(n)]
        self._next = (self._next + self.cfg.batch) % n
        entries = self._flat(self.r.xreadgroup(self.group, self.cfg.consumer,
                                               {s: ">" for s in order[:self.cfg.batch]},
                                               count=1))
        if not entries:
            entries = self._flat(self.r.xreadgroup(self.group, self.cfg.consumer,
                                                   {s: ">" for s in order}, count=1,
                                                   block=self.cfg.block_ms))
            if entries:
                got = {s for s, _, _ in entries}
                rest = [s for s in order if s not in got][:max(self.cfg.batch - len(got), 0)]
                if rest:
                    entries += self._flat(self.r.xreadgroup(
                        self.group, self.cfg.consumer, {s: ">" for s in rest}, count=1))
        self._many(entries)
        return len(entries)

    def run(self) -> None:
        """Until ``done()``; a lost connection is retried with backoff, resuming from the
        group's position (own pending entries first)."""
        wait = self.cfg.backoff_s
        while not self.done():
            try:
                self._loop()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.counts["reconnects"] += 1
                logger.warning("Redis connection lost (%s); reconnecting in %.2fs", exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, self.cfg.backoff_max_s)
                continue
            wait = self.cfg.backoff_s
        if self.tick is not None:
            self.tick(True)


def with_retry(fn: Callable[[], Any], cfg: BusConfig, what: str) -> Any:
    """``fn()`` until Redis answers (backoff doubling up to ``backoff_max_s``)."""
    wait = cfg.backoff_s
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("%s: Redis connection lost (%s); retry in %.2fs", what, exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, cfg.backoff_max_s)


def markets(r: redis.Redis, cfg: BusConfig) -> list[tuple[str, str]]:
    """Every ``(symbol, timeframe)`` an ingest process has published, sorted."""
    return sorted(tuple(m.split(":", 1)) for m in r.smembers(cfg.key("markets")))


# -- status ----------------------------------------------------------------------------------
def bus_status(r: redis.Redis, cfg: BusConfig,
               only: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Length, and per group consumers, pending and lag, of every market's streams."""
    out: dict[str, Any] = {"streams": {}, "deadletter": {}}
    for symbol, timeframe in only or markets(r, cfg):
        for kind in GROUPS:
            key = cfg.key(kind, symbol, timeframe)
            if not r.exists(key):
                continue
            groups = {g["name"]: {"consumers": g["consumers"], "pending": g["pending"],
                                  "lag": g.get("lag"),
                                  "last_delivered": g["last-delivered-id"]}
                      for g in r.xinfo_groups(key)}
            out["streams"][key] = {"length": r.xlen(key), "groups": groups}
    for role in GROUPS.values():
        key = cfg.key(f"deadletter:{role}")
        out["deadletter"][key] = r.xlen(key)
    return out


def format_status(st: dict[str, Any]) -> str:
    """The ``--status`` table: per stream its length, and per consumer group its consumers,
    pending entries and lag; then the dead-letter counts."""
    lines = [f"{'stream':40} {'length':>8} {'group':>8} {'consumers':>9} {'pending':>8} "
             f"{'lag':>6}"]
    for key, s in st["streams"].items():
        if not s["groups"]:
            lines.append(f"{key:40} {s['length']:>8} {'-':>8}")
        for g, v in s["groups"].items():
            lag = "?" if v["lag"] is None else v["lag"]
            lines.append(f"{key:40} {s['length']:>8} {g:>8} {v['consumers']:>9} "
                         f"{v['pending']:>8} {lag:>6}")
    for key, n in st["deadletter"].items():
        lines.append(f"{key:40} {n:>8} (dead letters)")
    return "\n".join(lines)
