"""The live engine: each closed candle -> the backtest's Forecaster -> the backtest's decision
-> a paper fill at the next open, committed in one SQLite transaction.

The decision uses ``bt_lstm.trading.rules.decide_signal`` (the rule ``RegimeLSTMStrategy``
calls); the trading kernel's ``Account`` fills, sizes and applies Backtrader's margin checks.
Forecasts come from ``Forecaster.forecast_last`` on a rolling history bounded by the bundle's
warm-up (``klines.bundle_warmup``), or from the model server.
"""
from __future__ import annotations

import http.client
import json
import logging
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from bt_lstm.config import StrategyConfig
from bt_lstm.live.cross import CrossBook
from bt_lstm.live.klines import Warmup, frame_of
from bt_lstm.live.state import LiveState, SqlState
from bt_lstm.trading.account import Account
from bt_lstm.trading.rules import decide_signal
from bt_lstm.trading.values import Candle, Decision, Fill, Forecast

logger = logging.getLogger(__name__)

DECISION_COLUMNS = ("datetime", "bar", "regime", "forecast", "signal", "position", "value",
                    "model")
FILL_COLUMNS = ("datetime", "bar", "size", "price", "commission")
EQUITY_POINTS = 500  # equity curve kept for the status page
LATENCIES_KEPT = 10_000  # the last latencies kept in memory: a role runs for weeks


class LocalForecasts:
    """In-process forecasts: ``Forecaster.forecast_last`` on the rolling history."""

    def __init__(self, forecaster: Any) -> None:
        self.forecaster = forecaster

    def __call__(self, candles: list[Candle] | pd.DataFrame) -> Forecast:
        """The forecast of the last candle of ``candles`` (in-process, the backtest's
        Forecaster); a frame when other markets' candles are beside ours (``cross``)."""
        return self.many([candles])[0]

    def many(self, histories: list[list[Candle] | np.ndarray | pd.DataFrame]) -> list[Forecast]:
        """The forecast at the end of each history (the bus engine: one per market of a
        burst), each network run once on the stacked windows."""
        out = self.forecaster.forecast_last_many(
            [c if isinstance(c, pd.DataFrame) else frame_of(c) for c in histories])
        return [Forecast(regime, forecast, "" if math.isnan(forecast) else
                         self.forecaster.model_for(regime)) for regime, forecast in out]


class RemoteForecasts:
    """Forecasts from the model server's ``POST /v1/forecast`` (one kept-alive connection)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        u = urlparse(url)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.conn: http.client.HTTPConnection | None = None

    def _post(self, body: bytes) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.request("POST", "/v1/forecast", body,
                          {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        """Close the keep-alive connection to the model server."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __call__(self, candles: list[Candle]) -> Forecast:
        """The forecast of the last candle of ``candles`` from the model server (``POST
        /v1/forecast``), retried on a dropped connection; a refusal raises with the server's
        message."""
        body = json.dumps({"candles": [{"t": c.open_ms, "o": c.open, "h": c.high, "l": c.low,
                                        "c": c.close, "v": c.volume}
                                       for c in map(Candle._make, candles)]}).encode()
        for attempt in range(3):
            try:
                status, data = self._post(body)
                break
            except (OSError, http.client.HTTPException) as exc:
                self.conn = None
                if attempt == 2:
                    raise RuntimeError(f"model server unreachable: {exc}") from None
                time.sleep(0.2 * 2 ** attempt)
        if status != 200:
            raise RuntimeError(f"model server answered {status}: {data[:300]!r}")
        out = json.loads(data)
        forecast = out["forecast"]
        return Forecast(int(out["regime"]), float("nan") if forecast is None else float(forecast),
                        out["model"])


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _stamp(ms: int) -> str:
    return str(pd.Timestamp(ms, unit="ms"))


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "" if math.isnan(x) else repr(x)
    return str(x)


def fresh_account(cfg: StrategyConfig) -> dict[str, Any]:
    """A new market's stored account row: the kernel's ``Account`` and the engine's own
    book-keeping (the last candle taken, the first one to decide, the candles decided)."""
    return {**Account(cfg).to_dict(), "last_ms": None, "first_ms": None, "bars": 0}


def book_candle(acct: dict[str, Any], cfg: StrategyConfig, symbol: str, timeframe: str,
                candle: Candle, fc: Forecast) -> tuple[dict[str, Any], Decision, Fill | None]:
    """One decided candle on the account, as RegimeLSTMStrategy would: the pending order fills
    at this candle's open, then the forecast decides a new order (filled at the next open).

    Returns the new account row (``acct`` is not changed), the decision and the fill. An order
    Backtrader would refuse (Margin) is refused: ``rejected`` counts it, and the decision's
    position stays where it was (a reversal whose opening part is refused fills its closing
    part).
    """
    account = Account.from_dict(acct, cfg)
    t, close = candle[0], candle[4]
    rejected = account.rejected
    fill = account.fill(candle)
    regime, forecast, model = fc
    want = decide_signal(forecast, cfg.threshold, cfg.long_only)
    bar = acct["bars"]
    decision = Decision(symbol, timeframe, t, bar, int(regime), forecast, want, account.position,
                        account.value(close), model)
    account.decide(want, close)
    if account.rejected != rejected:
        logger.warning("%s %s %s: an order was rejected (Margin): cash could not pay for it",
                       symbol, timeframe, _stamp(t))
    a = {**acct, **account.to_dict(), "bars": bar + 1, "last_ms": t}
    if a["first_ms"] is None:
        a["first_ms"] = t
    return a, decision, fill


class LiveEngine:
    """Decides every closed candle from ``first_ms`` on; paper-fills at the next open.

    ``first_ms``: the open time of the first candle to decide (on a fresh state folder, the
    candle open when the run started); earlier candles are history only. ``cross``: the other
    markets' candles of a bundle's ``cross:SYMBOL`` groups, put beside the history.
    """

    def __init__(self, forecasts: Callable[[list[Candle]], Forecast] | None,
                 cfg: StrategyConfig, symbol: str, timeframe: str, state_dir: Path | None,
                 warmup: Warmup, bar_ms: int, state: SqlState | None = None,
                 status_each_commit: bool = True, cross: CrossBook | None = None) -> None:
        self.forecasts, self.cfg, self.warmup, self.bar_ms = forecasts, cfg, warmup, bar_ms
        self.symbol, self.timeframe = symbol, timeframe
        self.cross = cross  # other markets' candles (cross:SYMBOL groups), None without
        # state_dir None (a PostgreSQL state): no CSVs or status.json, the database only
        self.folder = None if state_dir is None else Path(state_dir)
        self.state = state if state is not None else LiveState(self.folder, symbol, timeframe)
        self.history: deque = deque(self.state.recent_candles(warmup.history),
                                    maxlen=warmup.history)
        self.acct: dict[str, Any] = self.state.account() or fresh_account(cfg)
        self.last: dict[str, Any] = {}
        self.equity: deque = deque(maxlen=EQUITY_POINTS)
        self.feed_health: dict[str, Any] = {"connected": False, "reconnects": 0, "gaps": [],
                                            "ignored": 0, "malformed": 0}
        if cross is not None:
            self.feed_health["cross_late"] = 0  # decided before another market's candle came
        # status.json after every commit (the bus's decide role writes it every few seconds)
        self.status_each_commit = status_each_commit
        if self.folder is not None:
            self._rewrite_csvs()

    # -- state -----------------------------------------------------------------------------
    @property
    def last_ms(self) -> int | None:
        """Open time of the last candle decided (None before the first)."""
        return self.acct["last_ms"]

    @property
    def first_ms(self) -> int | None:
        """Open time of the first candle to decide (None until set on a fresh state)."""
        return self.acct["first_ms"]

    def set_first(self, first_ms: int) -> None:
        """On a fresh state folder: decide candles from this open time on."""
        if self.acct["first_ms"] is None:
            self.acct["first_ms"] = int(first_ms)

    def close(self) -> None:
        """Close the state and the forecast source."""
        self.state.close()
        closer = getattr(self.forecasts, "close", None)
        if closer is not None:
            closer()

    # -- candles ---------------------------------------------------------------------------
    def on_closed(self, candle: Candle) -> bool:
        """Take one closed candle (in open-time order). False when ignored (not newer than the
        last one taken)."""
        candle = Candle._make(candle)
        t = int(candle.open_ms)
        if self.last_ms is not None and t <= self.last_ms:
            self.feed_health["ignored"] += 1
            logger.info("candle %s ignored: not after the last one taken (%s)", _stamp(t),
                        _stamp(self.last_ms))
            return False
        if self.first_ms is None or t < self.first_ms:
            self.history.append(candle)
            self.acct["last_ms"] = t
            self.state.commit_candle(candle, self.acct, None, None, self._prune_before())
            return True
        self._decide(candle)
        return True

    def _prune_before(self) -> int | None:
        return self.history[0][0] if len(self.history) == self.history.maxlen else None

    def _decide(self, candle: Candle) -> None:
        self.history.append(candle)
        if self.cross is None:
            fc = self.forecasts(list(self.history))
        else:
            fc = self.forecasts(self.cross.attach(frame_of(list(self.history))))
        self.apply(candle, fc, self._prune_before())

    def apply(self, candle: Candle, fc: Forecast, prune_before: int | None,
              locked: bool = False) -> bool:
        """Fill, decide and commit one candle with its forecast: the one step both the
        in-process engine and the bus's decide role take.

        ``locked``: reload the account under its row lock first (several processes share the
        state); a candle not after the account's last one is then skipped (False).
        """
        t = int(candle[0])
        if locked:
            acct = self.state.lock_account(fresh_account(self.cfg))
            if acct["last_ms"] is not None and t <= acct["last_ms"]:
                self.state.rollback()
                return False
        else:
            acct = self.acct
            self.state.begin()
        try:
            acct, decision, fill = book_candle(acct, self.cfg, self.symbol, self.timeframe,
                                               candle, fc)
            self.state.write_candle(candle, acct, decision, fill, prune_before)
            self.state.commit()
        except BaseException:
            self.state.rollback()
            raise
        self.acct = acct
        self._after_commit(candle, decision, fill)
        return True

    def _after_commit(self, candle: Candle, decision: Decision, fill: Fill | None) -> None:
        d, stamp = decision, _stamp(decision.open_ms)
        if self.folder is not None:
            self._append_csv("decisions.csv", DECISION_COLUMNS,
                             (stamp, d.bar, d.regime, d.forecast, d.signal, d.position, d.value,
                              d.model))
            if fill is not None:
                self._append_csv("fills.csv", FILL_COLUMNS,
                                 (stamp, d.bar, fill.size, fill.price, fill.commission))
        self.equity.append((stamp, d.value))
        self.last = {"datetime": stamp, "open_ms": d.open_ms, "close": candle[4],
                     "regime": d.regime,
                     "forecast": None if math.isnan(d.forecast) else d.forecast,
                     "signal": d.signal, "position": d.position, "value": d.value,
                     "model": d.model, "pending_order": self.acct["pending"]}
        if self.status_each_commit:
            self.write_status()

    # -- files -----------------------------------------------------------------------------
    def _append_csv(self, name: str, columns: tuple, row: tuple) -> None:
        path = self.folder / name
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            if new:
                fh.write(",".join(columns) + "\n")
            fh.write(",".join(_fmt(x) for x in row) + "\n")

    def _rewrite_csvs(self) -> None:
        """From the database (the truth after a kill between commit and CSV append)."""
        for name, columns, rows in (
                ("decisions.csv", DECISION_COLUMNS,
                 [(_stamp(r[0]), r[1], r[2], _num(r[3]), r[4], r[5], r[6], r[7])
                  for r in self.state.decisions()]),
                ("fills.csv", FILL_COLUMNS, [(_stamp(r[0]), *r[1:]) for r in self.state.fills()])):
            tmp = self.folder / (name + ".tmp")
            with open(tmp, "w", newline="") as fh:
                fh.write(",".join(columns) + "\n")
                for row in rows:
                    fh.write(",".join(_fmt(x) for x in row) + "\n")
            os.replace(tmp, self.folder / name)
        for r in self.state.decisions()[-EQUITY_POINTS:]:
            self.equity.append((_stamp(r[0]), r[6]))

    def status(self) -> dict[str, Any]:
        """What ``status.json`` and the status page show: last candle, position, cash, equity
        curve, feed health, warm-up and counts. Paper trading only."""
        return {"symbol": self.symbol, "timeframe": self.timeframe, "updated": time.time(),
                "decided": self.acct["bars"], "last_candle": self.last,
                "position": self.acct["position"], "cash": self.acct["cash"],
                "rejected": self.acct["rejected"], "rounded_to_zero": self.acct["rounded_to_zero"],
                "equity": [list(e) for e in self.equity], "feed": self.feed_health,
                "warmup": {"first_ready": self.warmup.first_ready,
                           "history": self.warmup.history},
                "history_bars": len(self.history), "paper_trading_only": True}

    def write_status(self) -> None:
        """Write ``status.json`` atomically in the state folder (nothing without a folder)."""
        if self.folder is None:
            return
        tmp = self.folder / "status.json.tmp"
        tmp.write_text(json.dumps(self.status(), allow_nan=False, default=str))
        os.replace(tmp, self.folder / "status.json")

