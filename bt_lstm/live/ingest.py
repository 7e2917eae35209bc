"""The ingest role of the bus: every market's kline feed publishing its closed candles to
``candles:<S>:<tf>`` (entry id ``<open_ms>-0``), the candles of all markets sent to Redis
together.

A candle close of N markets arrives as N WebSocket messages at once, and a fresh stream's
warm-up as hundreds of REST candles: each sent on its own, each waited for a round trip and,
under ``appendfsync always``, an fsync of Redis' append-only file (the soak measured ~250
candles/s with the machine busy, and 200 markets' closes queued for most of a second). So the
publishers queue their candles in one ``PublishBatch``, sent as one pipeline: by the event
loop once the messages that arrived together are handled, and by a backfill at its end.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import redis

from bt_lstm.live.bus import (
    BusConfig,
    candle_fields,
    connect,
    is_stale,
    open_ms_of,
    trim_args,
    with_retry,
)
from bt_lstm.live.klines import Warmup, timeframe_ms
from bt_lstm.trading.values import Candle

logger = logging.getLogger(__name__)

# XADD and the decided-candle counter together (a script is atomic: no counter without entry)
_PUBLISH = """
local args = {'XADD', KEYS[1]}
local n = tonumber(ARGV[3])
for i = 4, 3 + n do args[#args + 1] = ARGV[i] end
args[#args + 1] = ARGV[1]
for i = 4 + n, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call(unpack(args))
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[2], 'decided', 1) end
return id
"""
FLUSH_AT = 1000  # queued candles sent at once at most


class PublishBatch:
    """The candles every publisher of one process queued, sent to Redis in one pipeline, in
    the order queued (one flush at a time: a market's candles reach its stream in order)."""

    def __init__(self, r: redis.Redis, cfg: BusConfig) -> None:
        self.r, self.cfg = r, cfg
        self.script = r.register_script(_PUBLISH)
        self.queue: list[tuple[StreamPublisher, int, bool, list[str]]] = []
        self.lock = threading.RLock()
        self.loop: asyncio.AbstractEventLoop | None = None  # set: flush from the event loop
        self.scheduled = False
        self.counts = {"flushes": 0, "candles": 0}

    def add(self, pub: StreamPublisher, t: int, decide: bool, argv: list[str]) -> None:
        """Queue one candle; on the event loop's thread, a flush once the messages at hand
        are handled; elsewhere (a backfill), the caller flushes."""
        with self.lock:
            self.queue.append((pub, t, decide, argv))
            full = len(self.queue) >= FLUSH_AT
        if full:
            self.flush()
        elif self.loop is not None and _on_loop(self.loop) and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what is queued (retried until Redis answers: an entry sent twice is refused by
        its id and counted as a duplicate, the counter moved by the first only)."""
        with self.lock:
            self.scheduled = False
            todo, self.queue = self.queue, []
            if not todo:
                return

            def send() -> list:
                pipe = self.r.pipeline(transaction=False)
                for pub, _, _, argv in todo:
                    self.script(keys=[pub.key, pub.meta], args=argv, client=pipe)
                return pipe.execute(raise_on_error=False)

            results = with_retry(send, self.cfg, "ingest XADD")
            self.counts["flushes"] += 1
            self.counts["candles"] += len(todo)
        for (pub, t, decide, _), res in zip(todo, results):
            if isinstance(res, Exception):
                if not is_stale(res):
                    raise res
                pub.refused(t, decide)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class StreamPublisher:
    """What ``KlineFeed`` drives in place of a ``LiveEngine``: closed candles to the stream
    (queued in the process's ``PublishBatch``; ``flush()`` sends them)."""

    def __init__(self, r: redis.Redis, cfg: BusConfig, symbol: str, timeframe: str,
                 history_bars: int, batch: PublishBatch | None = None) -> None:
        self.r, self.cfg, self.symbol, self.timeframe = r, cfg, symbol, timeframe
        self.key, self.meta = cfg.key("candles", symbol, timeframe), cfg.key("meta", symbol,
                                                                             timeframe)
        self.warmup = Warmup(first_ready=0, history=history_bars)
        self.batch = batch or PublishBatch(r, cfg)
        self.state = self  # KlineFeed records gaps in engine.state
        self.feed_health: dict[str, Any] = {"connected": False, "reconnects": 0, "gaps": [],
                                            "ignored": 0, "malformed": 0, "duplicates": 0}
        top = with_retry(lambda: r.xrevrange(self.key, count=1), cfg, "ingest start")
        meta = with_retry(lambda: r.hgetall(self.meta), cfg, "ingest start")
        self.acct = {"last_ms": open_ms_of(top[0][0]) if top else None,
                     "first_ms": int(meta["first_ms"]) if "first_ms" in meta else None,
                     "bars": int(meta.get("decided", 0))}
        with_retry(lambda: r.sadd(cfg.key("markets"), f"{symbol}:{timeframe}"), cfg, "ingest")

    @property
    def last_ms(self) -> int | None:
        """Open time of the last candle taken (queued or on the stream; None when empty)."""
        return self.acct["last_ms"]

    @property
    def first_ms(self) -> int | None:
        """Open time of the first candle to be decided (history before it is not)."""
        return self.acct["first_ms"]

    def set_first(self, first_ms: int) -> None:
        """Record, once per stream, the first candle to decide (the first ingest process to start
        sets it)."""
        def go() -> None:
            self.r.hsetnx(self.meta, "first_ms", int(first_ms))
            self.acct["first_ms"] = int(self.r.hget(self.meta, "first_ms"))
        with_retry(go, self.cfg, "ingest")

    def on_closed(self, candle: Candle) -> bool:
        """Queue a closed candle for its stream (entry id ``<open_ms>-0``, trimmed to the
        retention); False for a candle at or before the last one, which Redis would refuse
        too. A process killed before the flush loses nothing: its successor backfills from
        the stream's last entry."""
        t = int(candle.open_ms)
        if self.last_ms is not None and t <= self.last_ms:
            self.feed_health["ignored"] += 1
            return False
        decide = self.first_ms is not None and t >= self.first_ms
        trim = trim_args(self.cfg.retention, t)
        trim_words = (["MAXLEN", "~", str(trim["maxlen"])] if "maxlen" in trim
                      else ["MINID", "~", trim["minid"]])
        flat = [x for kv in candle_fields(candle, decide).items() for x in kv]
        self.batch.add(self, t, decide, [f"{t}-0", "1" if decide else "0", len(trim_words),
                                         *trim_words, *flat])
        self.acct["last_ms"] = t
        if decide:
            self.acct["bars"] += 1
        return True

    def flush(self) -> None:
        """Send every queued candle (the feed calls it after a backfill)."""
        self.batch.flush()

    def refused(self, t: int, decide: bool) -> None:
        """Redis refused candle ``t``: it was published before (by a predecessor)."""
        self.feed_health["duplicates"] += 1
        if decide:
            self.acct["bars"] -= 1
        logger.info("%s %s: candle %d already in the stream", self.symbol, self.timeframe, t)

    def record_gap(self, from_ms: int, to_ms: int, when: str) -> None:
        """Log a gap the exchange could not fill (the stream itself has no gap table)."""
        logger.warning("%s %s: gap %d..%d reported at %s", self.symbol, self.timeframe,
                       from_ms, to_ms, when)

    def close(self) -> None:
        """Nothing to close: the Redis connection is shared."""
        pass


def run_ingest(cfg: BusConfig, symbols: list[str], timeframe: str, feed_kw: dict[str, Any],
               history_bars: int) -> list[StreamPublisher]:
    """One kline feed per symbol in one event loop, each publishing to its candle stream
    through one ``PublishBatch``."""
    from bt_lstm.live.feed import FeedConfig, KlineFeed

    r = connect(cfg.url, name=f"bt-lstm-ingest-{cfg.consumer}")
    bar = timeframe_ms(timeframe)
    batch = PublishBatch(r, cfg)
    pubs = [StreamPublisher(r, cfg, s, timeframe, history_bars, batch) for s in symbols]
    feeds = [KlineFeed(p, FeedConfig(p.symbol, timeframe, bar, stop_after=cfg.stop_after,
                                     **feed_kw)) for p in pubs]

    async def all_feeds() -> None:
        batch.loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(*(f.run() for f in feeds))
        finally:
            batch.flush()

    asyncio.run(all_feeds())
    return pubs
