"""Kline messages and REST rows: our own parsing of Binance's formats, and the warm-up a bundle
needs before its first decision.

A candle is the kernel's ``Candle`` ``(open_ms, open, high, low, close, volume)``, keyed by its
open time.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.trading.timeframe import Timeframe
from bt_lstm.trading.values import Candle

# Recursive averages (EMA, Wilder) forget where they started as (1 - alpha)^k: the rolling
# history keeps enough bars for that start to weigh less than this.
FORGET = 1e-12


class KlineError(ValueError):
    """A message or row that is not a well-formed kline (logged and skipped, never fatal)."""


def timeframe_ms(timeframe: str) -> int:
    """'4h' -> 14_400_000 (``Timeframe.parse``; ValueError naming the spellings allowed)."""
    return Timeframe.parse(timeframe).ms


@dataclass(frozen=True)
class KlineEvent:
    """One parsed WebSocket message: a kline update, or a server shutdown notice."""

    kind: str  # "kline" | "shutdown"
    candle: Candle | None = None
    closed: bool = False
    symbol: str = ""
    interval: str = ""


def _num(d: dict, key: str) -> float:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise KlineError(f"field {key!r} is not a number: {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise KlineError(f"field {key!r} is not finite: {v!r}")
    return x


def parse_ws_message(text: str | bytes) -> KlineEvent | None:
    """Parse one message of ``<symbol>@kline_<tf>`` (raw or combined-stream form).

    Returns None for messages we ignore (subscription answers); raises ``KlineError`` for
    malformed or out-of-schema messages.
    """
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KlineError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise KlineError("not a JSON object")
    if "stream" in msg and "data" in msg:
        msg = msg["data"]
        if not isinstance(msg, dict):
            raise KlineError("combined-stream data is not an object")
    event = msg.get("e")
    if event == "serverShutdown":
        return KlineEvent("shutdown")
    if "result" in msg and "id" in msg:
        return None  # answer to a SUBSCRIBE
    if event != "kline":
        raise KlineError(f"unknown event {event!r}")
    k = msg.get("k")
    if not isinstance(k, dict):
        raise KlineError("kline message without a 'k' object")
    try:
        t = k["t"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise KlineError(f"open time 't' is not a non-negative integer: {t!r}")
        closed = k["x"]
        if not isinstance(closed, bool):
            raise KlineError(f"closed flag 'x' is not a boolean: {closed!r}")
        candle = Candle(t, _num(k, "o"), _num(k, "h"), _num(k, "l"), _num(k, "c"), _num(k, "v"))
    except KeyError as exc:
        raise KlineError(f"kline without field {exc}") from None
    _check_ohlc(candle)
    return KlineEvent("kline", candle, closed, str(k.get("s", "")), str(k.get("i", "")))


def _check_ohlc(c: Candle) -> None:
    _, o, h, lo, cl, v = c
    if not (h >= max(o, cl, lo) and lo <= min(o, cl) and v >= 0 and lo > 0):
        raise KlineError(f"inconsistent candle at {c[0]}: o={o} h={h} l={lo} c={cl} v={v}")


def parse_rest_klines(rows: Any, bar_ms: int, server_time_ms: int) -> list[Candle]:
    """Rows of ``GET /api/v3/klines``; the still-open candle (closing after ``server_time_ms``)
    is dropped."""
    if not isinstance(rows, list):
        raise KlineError("klines answer is not a list")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 6:
            raise KlineError(f"klines row is not a list of >= 6 fields: {row!r}")
        t = row[0]
        if isinstance(t, bool) or not isinstance(t, int):
            raise KlineError(f"klines open time is not an integer: {t!r}")
        c = Candle(t, *(_num({"x": v}, "x") for v in row[1:6]))
        _check_ohlc(c)
        if t + bar_ms > server_time_ms:
            continue  # unfinished
        out.append(c)
    return out


def kline_message(symbol: str, interval: str, c: Candle, closed: bool, bar_ms: int,
                  event_ms: int) -> str:
    """A Binance-format kline message (the replay server's output; our tests' input)."""
    t, o, h, lo, cl, v = c
    return json.dumps({"e": "kline", "E": event_ms, "s": symbol, "k": {
        "t": t, "T": t + bar_ms - 1, "s": symbol, "i": interval, "f": 0, "L": 0,
        "o": repr(o), "c": repr(cl), "h": repr(h), "l": repr(lo), "v": repr(v), "n": 0,
        "x": closed, "q": "0", "V": "0", "Q": "0", "B": "0"}})


def rest_row(c: Candle, bar_ms: int) -> list:
    """A candle as one row of Binance's ``/api/v3/klines`` answer (the replay server's REST)."""
    t, o, h, lo, cl, v = c
    return [t, repr(o), repr(h), repr(lo), repr(cl), repr(v), t + bar_ms - 1, "0", 0, "0", "0",
            "0"]


def frame_of(candles: list[Candle] | np.ndarray) -> pd.DataFrame:
    """Candles as the OHLCV frame the Forecaster reads (tz-naive UTC open-time index)."""
    if isinstance(candles, np.ndarray):
        arr = candles.astype(float, copy=False).reshape(-1, 6)
    else:  # a list of Candles: np.asarray walks named tuples at half the speed of this
        arr = np.fromiter(itertools.chain.from_iterable(candles), dtype=float,
                          count=6 * len(candles)).reshape(-1, 6)
    index = pd.DatetimeIndex(arr[:, 0].astype("int64").astype("datetime64[ms]")
                             .astype("datetime64[ns]"), name="datetime")
    return pd.DataFrame(arr[:, 1:], index=index,
                        columns=["open", "high", "low", "close", "volume"])


def candles_of(frame: pd.DataFrame) -> list[Candle]:
    """An OHLCV frame's rows as candles ``(open_ms, open, high, low, close, volume)``."""
    ms = pd.DatetimeIndex(frame.index).as_unit("ms").asi8.tolist()
    vals = frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=float).tolist()
    return [Candle(t, *v) for t, v in zip(ms, vals)]


@dataclass(frozen=True)
class Warmup:
    """How many candles a bundle needs: ``first_ready`` for its first forecast, ``history``
    for a forecast equal to one computed from all of history (recursive averages forgotten)."""

    first_ready: int
    history: int


# Feature groups the live engine cannot rebuild from kline messages.
NOT_LIVE = {"flow": "the trade count and taker-buy volume, which live candles do not carry"}
CROSS_ELSEWHERE = ("another market's candles, which only the in-process live engine (live "
                   "--models, without --bus) rebuilds")


def check_live_groups(forecaster: Any, cross_ok: bool = False) -> None:
    """Refuse, in one line, a bundle whose feature groups this live path cannot rebuild:
    ``flow`` always, ``cross:SYMBOL`` unless ``cross_ok`` (the in-process engine)."""
    from bt_lstm.config import parse_group

    for group in forecaster.feature_cfg.groups:
        kind = parse_group(group)[0]
        why = CROSS_ELSEWHERE if kind == "cross" and not cross_ok else NOT_LIVE.get(kind)
        if why is not None:
            raise ValueError(f"this bundle's feature group {group} needs {why}; see "
                             f"docs/guides/features.md (live trading)")


def bundle_warmup(forecaster: Any, cross_ok: bool = False) -> Warmup:
    """Computed from the bundle: the first bar with a complete window on a synthetic walk, plus
    the bars its recursive averages need to forget their start to ``FORGET`` (in higher
    candles for an ``htf`` group, which the walk is long enough to hold). A ``cross`` market
    is the same walk beside it (``cross_ok``: the in-process engine, which rebuilds it).

    Raises
    ------
    ValueError
        A feature group this live path cannot rebuild (``check_live_groups``).
    """
    check_live_groups(forecaster, cross_ok)
    cfg = forecaster.feature_cfg
    ratio = htf_ratio(forecaster)  # bars per higher candle (1: no htf group)
    span = max(cfg.vol_bars, cfg.rsi_bars, cfg.ema_bars, cfg.macd_slow + cfg.macd_signal,
               cfg.atr_bars, cfg.volume_bars, forecaster.regime_params.trend_bars)
    alphas = [2 / (b + 1) for b in (cfg.ema_bars, cfg.macd_fast, cfg.macd_slow)]
    alphas += [2 / (cfg.macd_signal + 1), 1 / cfg.rsi_bars, 1 / cfg.atr_bars]
    forget = max(math.ceil(math.log(FORGET) / math.log(1 - a)) for a in alphas)
    n = 3 * (span + forecaster.lookback) + 10
    if ratio > 1:
        n = (span + 3) * ratio + 3 * (span + forecaster.lookback) + 10
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    freq = pd.Timedelta(milliseconds=forecaster.bar_ms) if forecaster.bar_ms else "h"
    frame = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99,
                          "close": close, "volume": 1.0 + rng.random(n)},
                         index=pd.date_range("2000-01-01", periods=n, freq=freq))
    for group in forecaster.feature_cfg.groups:
        if group.startswith("cross:"):
            frame = _beside(frame, group.split(":", 1)[1])
    valid = forecaster.prepare(frame)[2]
    first_ready = int(np.argmax(valid)) + 1 if valid.any() else n
    return Warmup(first_ready=first_ready, history=first_ready + forget * ratio)


def _beside(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    from bt_lstm.signals.groups import attach_cross

    return attach_cross(frame, symbol, frame[["open", "high", "low", "close", "volume"]])


def htf_ratio(forecaster: Any) -> int:
    """The most data bars per candle of the bundle's ``htf`` groups (1 without one)."""
    from bt_lstm.config import parse_group

    ratio = 1
    for group in forecaster.feature_cfg.groups:
        kind, tf = parse_group(group)
        if kind == "htf" and forecaster.bar_ms:
            ratio = max(ratio, Timeframe.parse(tf).ms // forecaster.bar_ms)
    return ratio
