"""Several markets side by side: each on its own timestamps, put on one bar grid and checked
(the same market twice, different bar lengths), with a per-market report of gaps and moved
candles.

Off-grid candles (a 4h candle opening at 05:00 instead of 04:00, as gold's broker clock does)
go to the first grid slot that opens at or after their open time: the slot closes no earlier
than the candle does, so nothing is labelled before it is known. A moved candle that lands on
a slot the market already holds is dropped (the on-grid candle stays). Markets are never
forward-filled: a closed market simply has no row at that time.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bt_lstm.data.candles import DataError, find_gaps, fingerprint_frame, infer_bar

logger = logging.getLogger(__name__)

GRID_ANCHOR = pd.Timestamp("1970-01-01")  # bar slots are multiples of the bar since the epoch


@dataclass(frozen=True)
class MarketReport:
    """What aligning did to one market: its span, gaps and candles moved onto the grid."""

    symbol: str
    first_bar: str
    last_bar: str
    bars: int
    gaps: str
    n_missing: int
    off_grid_moved: int
    off_grid_dropped: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (metrics.json's ``markets[m]["data"]``)."""
        return dict(self.__dict__)

    def describe(self) -> str:
        """One line for the log and the terminal."""
        moved = ""
        if self.off_grid_moved or self.off_grid_dropped:
            moved = (f"; {self.off_grid_moved} off-grid candles moved to the next slot, "
                     f"{self.off_grid_dropped} dropped (slot taken)")
        return (f"{self.symbol}: {self.bars} bars {self.first_bar} .. {self.last_bar}, "
                f"{self.gaps}{moved}")


@dataclass(frozen=True)
class Panel:
    """Markets on one bar grid: ``frames[m]`` holds market m's candles on its own timestamps."""

    frames: dict[str, pd.DataFrame]
    bar: pd.Timedelta
    reports: dict[str, MarketReport]

    @property
    def symbols(self) -> list[str]:
        """The markets, in the order given."""
        return list(self.frames)

    @property
    def name(self) -> str:
        """The dataset name of the panel: BTCUSDT+ETHUSDT."""
        return "+".join(self.symbols)

    def timeline(self) -> pd.DatetimeIndex:
        """Every timestamp at which at least one market has a candle, sorted."""
        index = self.frames[self.symbols[0]].index
        for sym in self.symbols[1:]:
            index = index.union(self.frames[sym].index)
        return index


def snap_to_grid(frame: pd.DataFrame, bar: pd.Timedelta) -> tuple[pd.DataFrame, int, int]:
    """Move off-grid candles to the next grid slot; return (frame, moved, dropped).

    Notes
    -----
    A candle opening at 05:00 on a 4h grid closes at 09:00; the slot 08:00-12:00 closes
    after that, so the candle's values are known by its new slot's close (no look-ahead). The
    earlier slot 04:00-08:00 would close before the candle did. Where a moved candle lands on a
    slot the market already has, the candle that opened on the grid is kept. The input frame
    is not modified.
    """
    offset = (frame.index - GRID_ANCHOR) % bar
    off = offset != pd.Timedelta(0)
    if not off.any():
        return frame, 0, 0
    snapped = pd.DatetimeIndex(frame.index.where(~off, frame.index + (bar - offset)))
    # ceiling keeps the order; on a shared slot the on-grid candle (off False) sorts first
    order = pd.DataFrame({"t": snapped, "off": off, "pos": range(len(frame))})
    keep = np.sort(order.sort_values(["t", "off", "pos"]).drop_duplicates("t")["pos"].to_numpy())
    out = frame.iloc[keep].copy()
    out.index = pd.DatetimeIndex(snapped[keep], name=frame.index.name)
    dropped = len(frame) - len(keep)
    return out, int(off.sum()) - dropped, dropped


def _check_markets(frames: Mapping[str, pd.DataFrame]) -> dict[str, pd.Timedelta]:
    """Refuse the same market twice and markets of different bar lengths; return the bars."""
    if not frames:
        raise DataError("no markets given; pass --symbols A,B or --csv more than once")
    seen: dict[str, str] = {}
    for sym, frame in frames.items():
        fp = fingerprint_frame(frame)
        if fp in seen:
            raise DataError(f"{sym} and {seen[fp]} hold the same candles: the same market "
                            f"twice; give each market once")
        seen[fp] = sym
    bars = {sym: infer_bar(frame.index) for sym, frame in frames.items()}
    if len(set(bars.values())) > 1:
        listed = ", ".join(f"{s} {_label(b)}" for s, b in bars.items())
        raise DataError(f"markets of different timeframes ({listed}); give markets of one "
                        f"bar length")
    return bars


def _label(bar: pd.Timedelta) -> str:
    minutes = int(bar.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def align_markets(frames: Mapping[str, pd.DataFrame]) -> Panel:
    """Put the markets on one bar grid and report each market's span, gaps and moved candles.

    Parameters
    ----------
    frames
        symbol -> OHLCV candles on the market's own timestamps (a later start, weekend
        closures and gaps are kept as they are; nothing is forward-filled).

    Raises
    ------
    DataError
        The same candles under two names, or markets of different bar lengths.
    """
    bar = next(iter(_check_markets(frames).values()))
    out: dict[str, pd.DataFrame] = {}
    reports: dict[str, MarketReport] = {}
    for sym, frame in frames.items():
        snapped, moved, dropped = snap_to_grid(frame, bar)
        gaps = find_gaps(snapped.index, bar)
        reports[sym] = MarketReport(sym, str(snapped.index[0]), str(snapped.index[-1]),
                                    len(snapped), gaps.describe(), gaps.n_missing, moved,
                                    dropped)
        if gaps.n_gaps or moved or dropped:
            logger.warning("%s", reports[sym].describe())
        out[sym] = snapped
    return Panel(out, bar, reports)
