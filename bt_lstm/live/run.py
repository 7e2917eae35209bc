"""Wiring: a bundle (or a model server), the engine, the feed and the status page."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from bt_lstm.config import StrategyConfig
from bt_lstm.live.cross import CrossBook, cross_symbols
from bt_lstm.live.engine import LiveEngine, LocalForecasts, RemoteForecasts
from bt_lstm.live.feed import FeedConfig, KlineFeed
from bt_lstm.live.klines import Warmup, bundle_warmup, timeframe_ms

logger = logging.getLogger(__name__)


def remote_warmup(url: str) -> Warmup:
    """The warm-up (first ready bar, history length) of the bundle a model server has loaded
    (``GET /v1/model``)."""
    import json
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + "/v1/model", timeout=15) as resp:
        w = json.loads(resp.read())["warmup"]
    return Warmup(first_ready=int(w["first_ready"]), history=int(w["history"]))


def build_engine(symbol: str, timeframe: str, cfg: StrategyConfig, state_dir: Path,
                 models: str | None = None, model_server: str | None = None,
                 no_skill: str = "flat", skill_p: float | None = None) -> LiveEngine:
    """The engine with in-process forecasts of ``models`` or those of ``model_server``; a
    bundle's ``cross:SYMBOL`` markets get a ``CrossBook`` (in-process forecasts only)."""
    cross = None
    if model_server:
        forecasts: Any = RemoteForecasts(model_server)
        warmup = remote_warmup(model_server)
    else:
        from bt_lstm.models.forecast import load_forecaster

        kw = {} if skill_p is None else {"skill_p": skill_p}
        fc = load_forecaster(models, no_skill=no_skill, **kw)
        forecasts, warmup = LocalForecasts(fc), bundle_warmup(fc, cross_ok=True)
        others = cross_symbols(fc)
        if symbol.upper() in others:
            raise ValueError(f"this bundle's feature group cross:{symbol.upper()} is the market "
                             f"it trades; live --symbol another market")
        cross = CrossBook(others, warmup.history) if others else None
    return LiveEngine(forecasts, cfg, symbol, timeframe, state_dir, warmup,
                      timeframe_ms(timeframe), cross=cross)


def run_feed(engine: LiveEngine, feed_cfg: FeedConfig, status_port: int | None = None
             ) -> KlineFeed:
    """Drive ``engine`` from the kline feed until it stops, with the status page on
    ``status_port`` when given. Returns the feed (its counts)."""
    feed = KlineFeed(engine, feed_cfg)
    status = None
    if status_port is not None:
        from bt_lstm.live.status import StatusServer

        status = StatusServer(engine.status, status_port)
        logger.info("status page: http://127.0.0.1:%d/", status.port)
        engine.feed_health["status_port"] = status.port
    try:
        asyncio.run(feed.run())
    finally:
        engine.write_status()
        if status is not None:
            status.close()
    return feed


def export_pg_state(url: str, out: Path, cfg: StrategyConfig
                    ) -> list[tuple[tuple[str, str], int, int]]:
    """Every market of a PostgreSQL state as ``out/<SYMBOL>_<tf>/decisions.csv`` and
    ``fills.csv``, written (each atomically) as a state folder's from its database; returns
    (market, decisions, fills) per market."""
    from bt_lstm.live.pgstate import PgState, connect_pg, pg_markets

    conn = connect_pg(url)
    done = []
    try:
        for symbol, tf in pg_markets(conn):
            folder = Path(out) / f"{symbol}_{tf}"
            folder.mkdir(parents=True, exist_ok=True)
            state = PgState(conn, symbol, tf)
            # a state folder's CSVs are rewritten from its database when an engine opens it
            LiveEngine(None, cfg, symbol, tf, folder, Warmup(first_ready=0, history=1),
                       timeframe_ms(tf), state=state)
            done.append(((symbol, tf), len(state.decisions()), len(state.fills())))
    finally:
        conn.close()
    return done
