"""The Binance kline feed: WebSocket ``<symbol>@kline_<tf>`` plus REST ``/api/v3/klines``.

Acts only on closed candles (``k.x``), keyed by open time; the websockets library answers the
server's pings and sends its own; reconnects with backoff (also on a ``serverShutdown`` notice
and before the 24 h cut); after every (re)connect, backfills over REST, drops the unfinished
candle, merges by open time and reports gaps it cannot fill.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any

import websockets

from bt_lstm.live.engine import LATENCIES_KEPT, LiveEngine
from bt_lstm.live.klines import KlineError, parse_rest_klines, parse_ws_message
from bt_lstm.trading.timeframe import Timeframe
from bt_lstm.trading.values import Candle

logger = logging.getLogger(__name__)

BINANCE_WS = "wss://stream.binance.com:9443"
BINANCE_REST = "https://api.binance.com"
MAX_CONNECTION_S = 23.5 * 3600  # Binance cuts a connection at 24 h: leave before
REST_LIMIT = 1000


class FeedError(RuntimeError):
    """The feed cannot go on (REST down past every retry)."""


@dataclass
class FeedConfig:
    """One market's feed: symbol, bar length, the WebSocket and REST hosts (Binance spot, or the
    replay server), REST retries, reconnect backoff and when to stop."""
    symbol: str
    timeframe: str
    bar_ms: int
    ws_url: str = BINANCE_WS
    rest_url: str = BINANCE_REST
    rest_tries: int = 5
    backoff_s: float = 0.5  # first reconnect / retry wait, doubled up to backoff_max_s
    backoff_max_s: float = 30.0
    stop_after: int | None = None  # stop once this many candles are decided (in total)
    max_connection_s: float = MAX_CONNECTION_S
    cross_wait_s: float = 10.0  # wait this long for another market's candle (cross groups)

    @property
    def interval(self) -> str:
        """Binance's spelling of the timeframe ('4H', '240min' -> '4h')."""
        return str(Timeframe.parse(self.timeframe))


class RestClient:
    """Binance's REST klines endpoint with retries and backoff: backfill after a (re)connect, the
    unfinished candle dropped."""
    def __init__(self, cfg: FeedConfig) -> None:
        self.cfg = cfg

    def _get(self, path: str) -> Any:
        url = self.cfg.rest_url.rstrip("/") + path
        wait = self.cfg.backoff_s
        for attempt in range(1, self.cfg.rest_tries + 1):
            try:
                with urllib.request.urlopen(url, timeout=15) as resp:
                    return json.loads(resp.read())
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()  # it holds the response's socket: unclosed, a ResourceWarning
                if attempt == self.cfg.rest_tries:
                    raise FeedError(f"REST {url} failed {attempt} times, last: {exc}; giving "
                                    f"up (is --rest-url right and the exchange reachable?)"
                                    ) from None
                logger.warning("REST %s failed (%s); retry %d/%d in %.1fs", url, exc, attempt,
                               self.cfg.rest_tries - 1, wait)
                time.sleep(wait)
                wait = min(wait * 2, self.cfg.backoff_max_s)
        raise AssertionError("unreachable")

    def server_time(self) -> int:
        """The exchange's clock, in ms (which candles are closed is judged by it, not by ours)."""
        return int(self._get("/api/v3/time")["serverTime"])

    def closed_since(self, start_ms: int, symbol: str | None = None) -> list[Candle]:
        """Every closed candle of ``symbol`` (default: the feed's) from ``start_ms`` on, paged;
        the unfinished one dropped."""
        symbol = symbol or self.cfg.symbol
        now = self.server_time()
        out: dict[int, Candle] = {}
        cursor = start_ms
        while cursor + self.cfg.bar_ms <= now:
            rows = self._get(f"/api/v3/klines?symbol={symbol}&interval="
                             f"{self.cfg.interval}&startTime={cursor}&limit={REST_LIMIT}")
            try:
                page = parse_rest_klines(rows, self.cfg.bar_ms, now)
            except KlineError as exc:
                raise FeedError(f"REST klines answer malformed: {exc}") from None
            for c in page:
                out[c[0]] = c  # merge by open time
            if len(rows) < REST_LIMIT or not page:
                break
            cursor = page[-1][0] + self.cfg.bar_ms
        return [out[k] for k in sorted(out)]


class KlineFeed:
    """Drives a ``LiveEngine`` from the exchange (or the replay server). With ``cross`` groups
    (``engine.cross``) it follows every market over one combined stream
    (``/stream?streams=a@kline_tf/b@kline_tf``) and holds our closed candle until the other
    markets' candles of the same close are in, up to ``cross_wait_s`` (see ``live.cross``)."""

    def __init__(self, engine: LiveEngine, cfg: FeedConfig) -> None:
        self.engine, self.cfg = engine, cfg
        self.rest = RestClient(cfg)
        book = getattr(engine, "cross", None)  # the bus ingest publisher has none
        self.others = book.symbols if book is not None else []
        streams = [f"{s.lower()}@kline_{cfg.interval}" for s in (cfg.symbol, *self.others)]
        self.stream = streams[0]
        self.path = f"/ws/{self.stream}" if not self.others else \
            "/stream?streams=" + "/".join(streams)
        self.pending: tuple[Candle, float, float] | None = None  # (ours, received, deadline)
        # closed message received -> decision committed (s), the last LATENCIES_KEPT
        self.latencies: deque = deque(maxlen=LATENCIES_KEPT)
        self.stopped = False

    def done(self) -> bool:
        """True once stopped, or once ``stop_after`` candles are decided in the state."""
        n = self.cfg.stop_after
        return self.stopped or (n is not None and self.engine.acct["bars"] >= n)

    # -- backfill --------------------------------------------------------------------------
    def backfill(self) -> None:
        """Fill from the last candle taken to now over REST (on a fresh state: the warm-up)."""
        eng, bar = self.engine, self.cfg.bar_ms
        if eng.last_ms is None:
            now = self.rest.server_time()
            eng.set_first((now // bar) * bar)  # decide from the candle open now
            start = eng.first_ms - eng.warmup.history * bar
        else:
            start = eng.last_ms + bar
        self.pending = None  # a candle held over a dropped connection comes back over REST
        candles = self.rest.closed_since(start)
        # the other markets asked after ours: they hold every candle closed by then
        if self.others:  # (the bus ingest publisher has neither others nor a history)
            self._sync_cross(eng.history[0][0] if eng.history else start)
        self._take_in_order(candles, start)
        flush = getattr(self.engine, "flush", None)  # the bus's publisher sends them at once
        if flush is not None:
            flush()

    def _sync_cross(self, start: int) -> None:
        """Every other market's closed candles over REST, from after the last one held (from
        ``start`` when none is)."""
        book = self.engine.cross
        for symbol in self.others:
            last = book.last_ms(symbol)
            for c in self.rest.closed_since(start if last is None else last + self.cfg.bar_ms,
                                            symbol):
                book.take(symbol, c)

    def _take_in_order(self, candles: list[Candle], start: int) -> None:
        expected = start
        for c in candles:
            if self.done():
                return
            if c[0] > expected and self.engine.last_ms is not None:
                self._gap(expected, c[0] - self.cfg.bar_ms)
            self._note_missing(c[0], self._missing(c[0]))
            self.engine.on_closed(c)
            expected = c[0] + self.cfg.bar_ms

    def _missing(self, t: int) -> list[str]:
        """The other markets without a candle of candle ``t``'s close yet, when ``t`` is one to
        decide (none otherwise)."""
        eng = self.engine
        if not self.others or eng.first_ms is None or t < eng.first_ms:
            return []
        if eng.last_ms is not None and t <= eng.last_ms:
            return []
        return eng.cross.missing(t)

    def _note_missing(self, t: int, missing: list[str]) -> None:
        """Log and count a candle decided before another market's candle of its close came."""
        if missing:
            self.engine.feed_health["cross_late"] += 1
            logger.warning("candle %d decided without %s's candle of the same close (not in "
                           "after %.1fs): as-of, its last candle closed by then is used",
                           t, ", ".join(missing), self.cfg.cross_wait_s)

    def _gap(self, from_ms: int, to_ms: int) -> None:
        logger.warning("gap the exchange cannot fill: candles %s .. %s missing",
                       from_ms, to_ms)
        self.engine.feed_health["gaps"].append([from_ms, to_ms])
        self.engine.state.record_gap(from_ms, to_ms, time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime()))

    # -- the closed-candle path ------------------------------------------------------------
    def on_message(self, raw: str | bytes, received: float) -> str | None:
        """Handle one WebSocket message; returns "shutdown" on a shutdown notice."""
        try:
            event = parse_ws_message(raw)
        except KlineError as exc:
            self.engine.feed_health["malformed"] += 1
            logger.warning("malformed WebSocket message skipped: %s", exc)
            return None
        if event is None:
            return None
        if event.kind == "shutdown":
            logger.warning("server shutdown notice: reconnecting")
            return "shutdown"
        if not event.closed:
            return None  # an update of the unfinished candle: never acted on
        if event.interval and event.interval != self.cfg.interval:
            logger.warning("kline of interval %s skipped (want %s)", event.interval,
                           self.cfg.interval)
            return None
        symbol = event.symbol.upper()
        if symbol in self.others:
            self.engine.cross.take(symbol, event.candle)
            self._release()
            return None
        if symbol and symbol != self.cfg.symbol.upper():
            logger.warning("kline of %s skipped (not followed)", symbol)
            return None
        self._on_ours(event.candle, received)
        return None

    def _on_ours(self, candle: Candle, received: float) -> None:
        t = candle[0]
        eng, bar = self.engine, self.cfg.bar_ms
        if self.pending is not None:
            self._expire(force=True)  # a newer candle: settle the one waiting first
        if eng.last_ms is not None and t > eng.last_ms + bar:
            missing = self.rest.closed_since(eng.last_ms + bar)
            if self.others:
                self._sync_cross(eng.last_ms + bar)
            self._take_in_order([c for c in missing if c[0] < t], eng.last_ms + bar)
            if eng.last_ms is not None and t > eng.last_ms + bar:
                self._gap(eng.last_ms + bar, t - bar)
        if self.done():
            return
        if self.others and eng.first_ms is not None and t >= eng.first_ms and \
                (eng.last_ms is None or t > eng.last_ms) and eng.cross.missing(t):
            self.pending = (candle, received, time.monotonic() + self.cfg.cross_wait_s)
            return
        self._take(candle, received)

    def _take(self, candle: Candle, received: float) -> None:
        eng = self.engine
        if eng.on_closed(candle) and eng.first_ms is not None and candle[0] >= eng.first_ms:
            self.latencies.append(time.perf_counter() - received)

    def _release(self) -> None:
        """Decide the candle held for other markets once theirs are all in."""
        if self.pending is not None and not self.engine.cross.missing(self.pending[0][0]):
            candle, received, _ = self.pending
            self.pending = None
            self._take(candle, received)

    def _expire(self, force: bool = False) -> None:
        """Past the wait (or ``force``): ask REST for the other markets once more, then decide
        the held candle with what is known, as-of (counted by ``_note_missing``)."""
        if self.pending is None or (not force and time.monotonic() < self.pending[2]):
            return
        candle, received, _ = self.pending
        self.pending = None
        missing = self._missing(candle[0])
        self._sync_cross(candle[0])
        self._note_missing(candle[0], missing)
        if not self.done():
            self._take(candle, received)

    # -- the connection loop ---------------------------------------------------------------
    async def run(self) -> None:
        """The connection loop: connect to the kline stream, backfill over REST, then decide each
        closed candle (``k.x``) as it arrives, keyed by open time; reconnect with doubling
        backoff until done. Unfinished candles are never acted on."""
        url = f"{self.cfg.ws_url.rstrip('/')}{self.path}"
        wait = self.cfg.backoff_s
        loop = asyncio.get_running_loop()
        while not self.done():
            try:
                async with websockets.connect(url, ping_interval=20, ping_timeout=60,
                                              open_timeout=10, max_size=2 ** 20) as ws:
                    self.engine.feed_health["connected"] = True
                    opened = time.monotonic()
                    # messages arriving meanwhile are buffered by the connection
                    await loop.run_in_executor(None, self.backfill)
                    wait = self.cfg.backoff_s
                    while not self.done():
                        left = self.cfg.max_connection_s - (time.monotonic() - opened)
                        if left <= 0:
                            logger.info("connection near the 24 h cut: reconnecting")
                            break
                        wait_s = min(left, 5.0)
                        if self.pending is not None:
                            wait_s = max(0.0, min(wait_s, self.pending[2] - time.monotonic()))
                        try:
                            raw = await asyncio.wait_for(ws.recv(), timeout=wait_s)
                        except asyncio.TimeoutError:
                            self._expire()
                            continue
                        if self.on_message(raw, time.perf_counter()) == "shutdown":
                            break
            except FeedError:
                raise
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
                logger.warning("feed connection lost (%s); reconnecting in %.2fs", exc, wait)
            self.engine.feed_health["connected"] = False
            if self.done():
                break
            self.engine.feed_health["reconnects"] += 1
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.cfg.backoff_max_s)
