"""Many markets replayed on one port and one clock, over the replay server's Binance protocol.

``ws://HOST:PORT/ws/<symbol>@kline_<tf>`` streams one market's klines (``updates`` unfinished
messages, then the closed one, per candle); ``GET /api/v3/klines?symbol=...`` and
``/api/v3/time`` answer as ``replay.ReplayServer`` does. Every market's candles share one list
of open times: each tick closes one candle of every market (a candle close of a universe). The
clock waits for ``go()``; ``drop()`` cuts every WebSocket (the soak's feed faults); ``halt()``
stops closing candles. The wall time each candle was closed is kept (``close_times``) for
latency figures measured from the close.
"""
from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlparse

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from bt_lstm.live.klines import Candle, kline_message, rest_row

logger = logging.getLogger(__name__)


class MarketsReplay:
    """Replays ``markets`` (symbol -> candles, all on the same open times) at ``speed`` candles
    a second per market from ``start_index`` on; candles before it are REST history only."""

    def __init__(self, markets: dict[str, list[Candle]], timeframe: str, bar_ms: int,
                 start_index: int, speed: float, updates: int = 1) -> None:
        times = [c[0] for c in next(iter(markets.values()))]
        for symbol, candles in markets.items():
            if [c[0] for c in candles] != times:
                raise ValueError(f"{symbol}: its candles' open times differ from the first "
                                 f"market's (every market closes a candle at each tick)")
        if not 0 < start_index < len(times):
            raise ValueError(f"start_index {start_index}: give 1..{len(times) - 1}")
        self.markets, self.timeframe, self.bar_ms = markets, timeframe, bar_ms
        self.times, self.speed, self.updates = times, float(speed), int(updates)
        self.cur = start_index  # the candle open now
        self.partial: dict[str, Candle] = {}
        self.clients: dict[str, set[ServerConnection]] = {s: set() for s in markets}
        self.close_times: dict[int, float] = {}  # open_ms -> wall time its closes were sent
        self.counts = {"closed_ticks": 0, "connections": 0, "drops": 0, "rest": 0}
        self._go = asyncio.Event()
        self._halt = False
        self.port: int | None = None

    # -- control (call through the loop: loop.call_soon_threadsafe) ------------------------
    def go(self) -> None:
        """Start the clock: the first tick closes the candle at ``start_index``."""
        self._go.set()

    def halt(self) -> None:
        """Close no more candles (the clock stops at the candle open now)."""
        self._halt = True

    def drop(self) -> int:
        """Cut every market's WebSocket connection (as a network fault would); how many."""
        n = 0
        for conns in self.clients.values():
            for ws in list(conns):
                ws.transport.abort()
                n += 1
        self.counts["drops"] += 1
        return n

    def connected(self) -> int:
        """Markets with at least one WebSocket client."""
        return sum(bool(c) for c in self.clients.values())

    # -- REST ------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Halfway through the candle open now."""
        if self.cur >= len(self.times):
            return self.times[-1] + 2 * self.bar_ms
        return self.times[self.cur] + self.bar_ms // 2

    def _json(self, status: int, obj: object) -> Response:
        body = json.dumps(obj).encode()
        headers = Headers([("Content-Type", "application/json"),
                           ("Content-Length", str(len(body))), ("Connection", "close")])
        return Response(status, HTTPStatus(status).phrase, headers, body)

    def process_request(self, connection: ServerConnection, request) -> Response | None:
        """REST time, ping and klines (per ``symbol``, the open candle included as Binance
        does); a ``/ws/`` request goes on to the WebSocket handshake."""
        url = urlparse(request.path)
        if url.path.startswith("/ws/"):
            return None
        self.counts["rest"] += 1
        if url.path == "/api/v3/time":
            return self._json(200, {"serverTime": self.now_ms()})
        if url.path == "/api/v3/ping":
            return self._json(200, {})
        if url.path != "/api/v3/klines":
            return self._json(404, {"code": -1, "msg": "not found"})
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        candles = self.markets.get(q.get("symbol", "").upper())
        if candles is None or q.get("interval") != self.timeframe:
            return self._json(400, {"code": -1121, "msg": "Invalid symbol or interval."})
        try:
            start, limit = int(q.get("startTime", 0)), min(int(q.get("limit", 500)), 1000)
        except ValueError:
            return self._json(400, {"code": -1100, "msg": "bad parameter"})
        lo = bisect.bisect_left(self.times, start)
        hi = min(self.cur + 1, len(self.times), lo + limit)
        rows = []
        for i in range(lo, hi):
            c = candles[i]
            if i == self.cur:  # the open candle, as far as it has formed
                c = self.partial.get(q["symbol"].upper()) or (c[0], c[1], c[1], c[1], c[1], 0.0)
            rows.append(rest_row(c, self.bar_ms))
        return self._json(200, rows)

    # -- WebSocket -------------------------------------------------------------------------
    async def handler(self, ws: ServerConnection) -> None:
        """One market's client (``/ws/<symbol>@kline_<tf>``), registered until it leaves."""
        name = urlparse(ws.request.path).path.rsplit("/", 1)[-1]
        symbol, _, interval = name.partition("@kline_")
        conns = self.clients.get(symbol.upper())
        if conns is None or interval != self.timeframe:
            await ws.close(1008, f"unknown stream {name}")
            return
        self.counts["connections"] += 1
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async def _send_all(self, msgs: dict[str, str]) -> None:
        for symbol, msg in msgs.items():
            for ws in list(self.clients[symbol]):
                try:
                    await ws.send(msg)
                except websockets.ConnectionClosed:
                    self.clients[symbol].discard(ws)

    def _msgs(self, i: int, closed: bool, frac: float = 1.0) -> dict[str, str]:
        now = int(time.time() * 1000)
        out = {}
        for symbol, candles in self.markets.items():
            c = candles[i]
            if not closed:
                px = c[1] + (c[4] - c[1]) * frac
                c = self.partial[symbol] = (c[0], c[1], max(c[1], px), min(c[1], px), px,
                                            c[5] * frac)
            out[symbol] = kline_message(symbol, self.timeframe, c, closed, self.bar_ms, now)
        return out

    async def stream(self) -> None:
        """After ``go()``: tick k closes candle ``start_index + k`` of every market at
        ``(k + 1) / speed`` seconds (a fixed schedule: a slow tick does not shift the next),
        the unfinished updates before it."""
        await self._go.wait()
        t0, step = time.monotonic(), 1.0 / self.speed
        k = 0
        while self.cur < len(self.times) and not self._halt:
            i = self.cur
            for u in range(self.updates):
                await _sleep_until(t0 + (k + (u + 1) / (self.updates + 1)) * step)
                await self._send_all(self._msgs(i, False, (u + 1) / (self.updates + 1)))
            await _sleep_until(t0 + (k + 1) * step)
            if self._halt:
                break
            msgs = self._msgs(i, True)
            self.partial.clear()
            self.cur = i + 1
            self.close_times[self.times[i]] = time.time()
            await self._send_all(msgs)
            self.counts["closed_ticks"] += 1
            k += 1

    async def serve_forever(self, host: str = "127.0.0.1", port: int = 0,
                            ready: asyncio.Future | None = None,
                            stop: asyncio.Event | None = None) -> None:
        """Listen on ``host:port`` (0: a free port, set on ``ready``) and stream until ``stop``
        is set."""
        async with serve(self.handler, host, port, process_request=self.process_request,
                         ping_interval=20, ping_timeout=60, max_queue=None) as server:
            self.port = list(server.sockets)[0].getsockname()[1]
            if ready is not None:
                ready.set_result(self.port)
            streamer = asyncio.create_task(self.stream())
            try:
                await (stop.wait() if stop is not None else asyncio.Future())
            finally:
                streamer.cancel()


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(deadline - time.monotonic(), 0.0))
