"""A replay of a CSV's candles over Binance's kline WebSocket protocol and REST endpoints.

One port serves both: ``ws://HOST:PORT/ws/<symbol>@kline_<tf>`` streams, from ``start`` on,
``updates`` unfinished-candle messages then the closed one per candle, ``speed`` candles a
second; ``GET /api/v3/klines`` and ``GET /api/v3/time`` answer as Binance does at the replay's
clock (the still-open candle included, as Binance does). The clock starts with the first
WebSocket client and does not wait for anyone afterwards. Faults (each every ``fault_every``
candles, at its own offset): drop (connection cut), duplicate (a closed candle sent twice), gap
(a closed candle never sent), reorder (two closed candles swapped), shutdown (a
``serverShutdown`` notice, then the cut).

Other markets (``others``: symbol -> candles of the same bar) are replayed on the same clock:
their closed candle of each close follows ours (``cross_delay_s`` later), over
``/ws/<symbol>@kline_<tf>`` or the combined ``/stream?streams=a@kline_tf/b@kline_tf`` (messages
wrapped as ``{"stream": ..., "data": ...}``, as Binance does), and over REST. Faults touch our
market only; a candle missing from another market's list is never sent (its gap).
"""
from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlparse

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from bt_lstm.live.klines import Candle, kline_message, rest_row

logger = logging.getLogger(__name__)

FAULTS = ("drop", "duplicate", "gap", "reorder", "shutdown")


@dataclass
class ReplayConfig:
    """What the replay server streams: market, bar length, the first streamed candle (earlier
    ones are REST history only), speed, unfinished-candle updates per close, fault switches
    and injected REST errors."""
    symbol: str
    timeframe: str
    bar_ms: int
    start_index: int  # first candle streamed (earlier ones: REST history only)
    speed: float = 10.0  # candles per second
    updates: int = 2  # unfinished-candle messages before each close
    faults: tuple = ()
    fault_every: int = 25
    rest_errors: int = 0  # the first N REST requests answer 500
    stop_index: int | None = None  # stream up to (excluding) this candle
    cross_delay_s: float = 0.0  # other markets' closed candles: this long after ours


@dataclass
class ReplayStats:
    """What the replay server did: closed candles sent, faults fired, REST requests, connections."""
    sent_closed: int = 0
    faults: dict = field(default_factory=dict)
    rest_requests: int = 0
    connections: int = 0


class ReplayServer:
    """Serves candles over Binance's kline WebSocket protocol and REST endpoint, at a set speed
    and with optional faults: the demo feed and the live tests' exchange. Its clock is the
    candles'."""
    def __init__(self, candles: list[Candle], cfg: ReplayConfig,
                 others: dict[str, list[Candle]] | None = None) -> None:
        bad = [f for f in cfg.faults if f not in FAULTS]
        if bad:
            raise ValueError(f"unknown faults {bad}: choose from {', '.join(FAULTS)}")
        self.candles, self.cfg = candles, cfg
        self.times = [c[0] for c in candles]
        self.others = {k.upper(): {c[0]: c for c in v} for k, v in (others or {}).items()}
        self.other_times = {k: sorted(v) for k, v in self.others.items()}
        self.subs: dict[ServerConnection, tuple[set[str], bool]] = {}  # symbols, combined?
        self.cur = cfg.start_index  # index of the candle open now
        self.partial: Candle | None = None
        self.clients: set[ServerConnection] = set()
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.stats = ReplayStats()
        self.port: int | None = None

    # -- REST ------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """The replay's clock: halfway through the candle open now (past the end: two bars after
        the last)."""
        if self.cur >= len(self.candles):
            return self.times[-1] + 2 * self.cfg.bar_ms
        return self.times[self.cur] + self.cfg.bar_ms // 2

    def _json(self, status: int, obj: object) -> Response:
        body = json.dumps(obj).encode()
        headers = Headers([("Content-Type", "application/json"),
                           ("Content-Length", str(len(body))), ("Connection", "close")])
        return Response(status, HTTPStatus(status).phrase, headers, body)

    def process_request(self, connection: ServerConnection, request) -> Response | None:
        """Answer the REST endpoints (time, ping, klines) from the candles up to the replay's
        clock; let a ``/ws/`` request on to the WebSocket handshake."""
        url = urlparse(request.path)
        if url.path.startswith(("/ws/", "/stream")):
            return None  # the WebSocket handshake goes on
        self.stats.rest_requests += 1
        if self.stats.rest_requests <= self.cfg.rest_errors:
            return self._json(500, {"code": -1000, "msg": "replay: injected error"})
        if url.path == "/api/v3/time":
            return self._json(200, {"serverTime": self.now_ms()})
        if url.path == "/api/v3/ping":
            return self._json(200, {})
        if url.path == "/api/v3/klines":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                start = int(q.get("startTime", 0))
                limit = min(int(q.get("limit", 500)), 1000)
            except ValueError:
                return self._json(400, {"code": -1100, "msg": "bad parameter"})
            symbol = q.get("symbol", "").upper()
            if symbol not in (self.cfg.symbol, *self.others) or \
                    q.get("interval") != self.cfg.timeframe:
                return self._json(400, {"code": -1121, "msg": "Invalid symbol or interval."})
            if symbol != self.cfg.symbol:
                return self._json(200, self._other_rows(symbol, start, limit))
            lo = bisect.bisect_left(self.times, start)
            hi = min(self.cur + 1, len(self.candles))  # the open candle included
            rows = []
            for i in range(lo, min(hi, lo + limit)):
                c = self.candles[i]
                if i == self.cur:
                    c = self.partial or (c[0], c[1], c[1], c[1], c[1], 0.0)
                rows.append(rest_row(c, self.cfg.bar_ms))
            return self._json(200, rows)
        return self._json(404, {"code": -1, "msg": "not found"})

    def _other_rows(self, symbol: str, start: int, limit: int) -> list[list]:
        """Another market's REST rows from ``start``: its candles closed by the replay's clock,
        then the one open now (as Binance answers; the client drops it)."""
        now = self.now_ms()
        times = self.other_times[symbol]
        rows = []
        for t in times[bisect.bisect_left(times, start):]:
            if t > now or len(rows) >= limit:
                break
            c = self.others[symbol][t]
            if t + self.cfg.bar_ms > now:
                c = (c[0], c[1], c[1], c[1], c[1], 0.0)
            rows.append(rest_row(c, self.cfg.bar_ms))
        return rows

    # -- WebSocket -------------------------------------------------------------------------
    def _subscribe(self, ws: ServerConnection) -> None:
        """The markets a client asked for by its path: ``/ws/<stream>`` or
        ``/stream?streams=<stream>/<stream>``."""
        url = urlparse(ws.request.path if ws.request is not None else "/ws/")
        combined = url.path.startswith("/stream")
        names = parse_qs(url.query).get("streams", [""])[0].split("/") if combined else \
            [url.path[len("/ws/"):]]
        symbols = {n.split("@")[0].upper() for n in names if n}
        self.subs[ws] = (symbols or {self.cfg.symbol}, combined)

    async def handler(self, ws: ServerConnection) -> None:
        """One WebSocket client: registered until it disconnects; the first one starts the
        stream."""
        self.stats.connections += 1
        self._subscribe(ws)
        self.clients.add(ws)
        self.started.set()
        try:
            await ws.wait_closed()
        finally:
            self.clients.discard(ws)
            self.subs.pop(ws, None)

    async def _send(self, msg: str, symbol: str | None = None) -> None:
        """``msg`` to every client following ``symbol`` (default: ours; a notice without a
        symbol goes to all), wrapped for a combined stream."""
        symbol = symbol or self.cfg.symbol
        stream = f"{symbol.lower()}@kline_{self.cfg.timeframe}"
        for ws in list(self.clients):
            symbols, combined = self.subs.get(ws, ({self.cfg.symbol}, False))
            if symbol not in symbols and '"kline"' in msg:
                continue
            out = f'{{"stream": "{stream}", "data": {msg}}}' if combined else msg
            try:
                await ws.send(out)
            except websockets.ConnectionClosed:
                self.clients.discard(ws)

    async def _send_others(self, opens: list[int]) -> None:
        """The other markets' closed candles opening at ``opens`` (after ours)."""
        if not self.others:
            return
        if self.cfg.cross_delay_s:
            await asyncio.sleep(self.cfg.cross_delay_s)
        for symbol, book in self.others.items():
            for t in opens:
                if t in book:
                    await self._send(kline_message(symbol, self.cfg.timeframe, book[t], True,
                                                   self.cfg.bar_ms, int(time.time() * 1000)),
                                     symbol)

    def _msg(self, c: Candle, closed: bool) -> str:
        return kline_message(self.cfg.symbol, self.cfg.timeframe, c, closed, self.cfg.bar_ms,
                             int(time.time() * 1000))

    def _fault_at(self, step: int) -> str | None:
        for k, name in enumerate(self.cfg.faults):
            if step % self.cfg.fault_every == 3 + 4 * k:
                return name
        return None

    async def _count(self, name: str) -> None:
        self.stats.faults[name] = self.stats.faults.get(name, 0) + 1

    async def stream(self) -> None:
        """Send each candle's unfinished updates, then its closed message, to every client at the
        configured speed, firing the fault switches on schedule."""
        await self.started.wait()
        cfg = self.cfg
        pause = 1.0 / cfg.speed / (cfg.updates + 1)
        stop = len(self.candles) if cfg.stop_index is None else cfg.stop_index
        step = 0
        while self.cur < stop:
            i, c = self.cur, self.candles[self.cur]
            for u in range(cfg.updates):  # the forming candle, not closed yet
                frac = (u + 1) / (cfg.updates + 1)
                px = c[1] + (c[4] - c[1]) * frac
                self.partial = (c[0], c[1], max(c[1], px), min(c[1], px), px, c[5] * frac)
                await self._send(self._msg(self.partial, False))
                await asyncio.sleep(pause)
            fault = self._fault_at(step) if i + 1 < stop else None
            self.partial = None
            if fault == "reorder":
                # close i and i+1 together, sending i+1 first
                n = self.candles[i + 1]
                self.cur = i + 2
                await self._send(self._msg(n, True))
                await self._send(self._msg(c, True))
                await self._send_others([c[0], n[0]])
                self.stats.sent_closed += 2
                await self._count(fault)
                step += 2
                await asyncio.sleep(pause)
                continue
            self.cur = i + 1
            if fault == "gap":
                await self._count(fault)
            else:
                await self._send(self._msg(c, True))
                self.stats.sent_closed += 1
                if fault == "duplicate":
                    await self._send(self._msg(c, True))
                    await self._count(fault)
                elif fault == "drop":
                    for ws in list(self.clients):
                        ws.transport.abort()
                    await self._count(fault)
                elif fault == "shutdown":
                    await self._send(json.dumps({"e": "serverShutdown",
                                                 "E": int(time.time() * 1000)}))
                    await asyncio.sleep(pause)
                    for ws in list(self.clients):
                        await ws.close(1001, "server shutdown")
                    await self._count(fault)
            await self._send_others([c[0]])
            step += 1
            await asyncio.sleep(pause)
        self.finished.set()

    async def serve_forever(self, host: str = "127.0.0.1", port: int = 0,
                            ready: asyncio.Future | None = None,
                            stop: asyncio.Event | None = None) -> None:
        """Listen on ``host:port`` (0: a free port, set on ``ready``) and stream until ``stop``
        is set (forever without one)."""
        async with serve(self.handler, host, port, process_request=self.process_request,
                         ping_interval=20, ping_timeout=60) as server:
            self.port = list(server.sockets)[0].getsockname()[1]
            if ready is not None:
                ready.set_result(self.port)
            streamer = asyncio.create_task(self.stream())
            streamer.add_done_callback(_log_failure)
            try:
                await (stop.wait() if stop is not None else asyncio.Future())
            finally:
                streamer.cancel()


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("replay stream failed: %r", task.exception())
