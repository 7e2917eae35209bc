"""Other markets' candles for a bundle's ``cross:SYMBOL`` groups in the live engine.

The feed subscribes to every market's klines over one combined WebSocket stream (and backfills
them over the same REST endpoint); ``CrossBook`` keeps each other market's closed candles and
puts them beside our history with ``signals.groups.attach_cross``, the backtest's as-of rule:
our candle opening at t gets the other market's last candle closed by t + bar.

When our candle t has closed and the other market's candle t has not arrived, the feed waits up
to ``FeedConfig.cross_wait_s`` for it, then asks REST once more, then decides with the last
candle known (what the backtest's as-of rule does where that candle is missing from the data).
A candle that only arrives after its bar was decided is kept for later bars but cannot change
the decision taken: the one way live and backtest can part (counted as ``cross_late``).
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Iterable

import pandas as pd

from bt_lstm.config import parse_group
from bt_lstm.live.klines import frame_of
from bt_lstm.signals.groups import attach_cross
from bt_lstm.trading.values import Candle

logger = logging.getLogger(__name__)

SLACK = 16  # candles kept beyond the engine's history (the other market may run ahead of us)


def cross_symbols(forecaster: Any) -> list[str]:
    """The other markets of a bundle's ``cross:SYMBOL`` groups, upper case, in order."""
    out: list[str] = []
    for group in forecaster.feature_cfg.groups:
        kind, arg = parse_group(group)
        if kind == "cross" and arg.upper() not in out:
            out.append(arg.upper())
    return out


class CrossBook:
    """The closed candles of the other markets, as many as the engine's history holds."""

    def __init__(self, symbols: Iterable[str], history: int) -> None:
        self.candles: dict[str, deque] = {s.upper(): deque(maxlen=history + SLACK)
                                          for s in symbols}

    @property
    def symbols(self) -> list[str]:
        """The other markets, upper case."""
        return list(self.candles)

    def last_ms(self, symbol: str) -> int | None:
        """Open time of the other market's last candle held (None before the first)."""
        book = self.candles[symbol.upper()]
        return book[-1][0] if book else None

    def take(self, symbol: str, candle: Candle) -> bool:
        """Keep one closed candle of ``symbol``; False when it is not newer than the last held
        (a duplicate, or a late one older than a candle already held)."""
        book = self.candles[symbol.upper()]
        candle = Candle._make(candle)
        if book and candle[0] <= book[-1][0]:
            return False
        book.append(candle)
        return True

    def missing(self, open_ms: int) -> list[str]:
        """The markets whose candle opening at ``open_ms`` (closing with ours) is not held yet."""
        return [s for s, book in self.candles.items() if not book or book[-1][0] < open_ms]

    def attach(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (our history) with every other market's candles beside it, as-of
        (``attach_cross``, the backtest's rule); a market with fewer than two candles held
        gives NaN columns (no forecast), never a guess."""
        for symbol, book in self.candles.items():
            if len(book) >= 2:
                frame = attach_cross(frame, symbol, frame_of(list(book)))
            else:
                for col in ("open", "high", "low", "close", "volume"):
                    frame[f"{symbol}.{col}"] = float("nan")
        return frame
