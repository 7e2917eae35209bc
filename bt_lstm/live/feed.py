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

    def closed_since(self, start_ms: int) -> list[Candle]:
        """Every closed candle from ``start_ms`` on, paged; the unfinished one dropped."""
        now = self.server_time()
        out: dict[int, Candle] = {}
        cursor = start_ms
        while cursor + self.cfg.bar_ms <= now:
            rows = self._get(f"/api/v3/klines?symbol={self.cfg.symbol}&interval="
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
    """Drives a ``LiveEngine`` from the exchange (or the replay server)."""

    def __init__(self, engine: LiveEngine, cfg: FeedConfig) -> None:
        self.engine, self.cfg = engine, cfg
        self.rest = RestClient(cfg)
        self.stream = f"{cfg.symbol.lower()}@kline_{cfg.interval}"
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
        candles = self.rest.closed_since(start)
        self._take_in_order(candles, start)
        flush = getattr(self.engine, "flush", None)  # the bus's publisher sends them at once
        if flush is not None:
            flush()

    def _take_in_order(self, candles: list[Candle], start: int) -> None:
        expected = start
        for c in candles:
            if self.done():
                return
            if c[0] > expected and self.engine.last_ms is not None:
                self._gap(expected, c[0] - self.cfg.bar_ms)
            self.engine.on_closed(c)
            expected = c[0] + self.cfg.bar_ms

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
        t = event.candle[0]
        eng, bar = self.engine, self.cfg.bar_ms
        if eng.last_ms is not None and t > eng.last_ms + bar:
            missing = self.rest.closed_since(eng.last_ms + bar)
            self._take_in_order([c for c in missing if c[0] < t], eng.last_ms + bar)
            if eng.last_ms is not None and t > eng.last_ms + bar:
                self._gap(eng.last_ms + bar, t - bar)
        if self.done():
            return None
        if eng.on_closed(event.candle) and eng.first_ms is not None and t >= eng.first_ms:
            self.latencies.append(time.perf_counter() - received)
        return None

    # -- the connection loop ---------------------------------------------------------------
    async def run(self) -> None:
        """The connection loop: connect to the kline stream, backfill over REST, then decide each
        closed candle (``k.x``) as it arrives, keyed by open time; reconnect with doubling
        backoff until done. Unfinished candles are never acted on."""
        url = f"{self.cfg.ws_url.rstrip('/')}/ws/{self.stream}"
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
                        try:
                            raw = await asyncio.wait_for(ws.recv(), timeout=min(left, 5.0))
                        except asyncio.TimeoutError:
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
