"""One calendar split for several markets: train / validation / test cut by time, the same dates
for every market, with the purge gap; each market's bar ranges follow from those dates.

A market's parts are never cut by its own bar count, so no market's test span overlaps another
market's training span. With one market (and no gaps) the bar ranges equal ``split_bounds``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from bt_lstm.config import WindowConfig
from bt_lstm.signals.windows import SplitBounds, split_bounds


@dataclass(frozen=True)
class CalendarSplit:
    """The dates of a split: training bars open before ``train_end``; validation bars in
    [``val_start``, ``val_end``); test bars at or after ``test_start``."""

    train_start: pd.Timestamp
    train_end: pd.Timestamp
    val_start: pd.Timestamp
    val_end: pd.Timestamp
    test_start: pd.Timestamp

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dates (metrics.json's ``split``)."""
        return {k: str(v) for k, v in self.__dict__.items()}


def calendar_split(timeline: pd.DatetimeIndex, cfg: WindowConfig) -> CalendarSplit:
    """Cut ``timeline`` (every bar time at which any market trades) by ``cfg``'s fractions.

    Notes
    -----
    The fractions and the purge gap count bars of the common timeline, so each boundary is a
    date shared by every market; ``market_bounds`` turns the dates into one market's bars.
    """
    b = split_bounds(len(timeline), cfg)
    return CalendarSplit(timeline[0], timeline[b.train[1]], timeline[b.val[0]],
                         timeline[b.val[1]], timeline[b.test[0]])


def market_bounds(index: pd.DatetimeIndex, split: CalendarSplit, horizon: int) -> SplitBounds:
    """One market's bar ranges under ``split``.

    Notes
    -----
    A part's last usable bar is also held ``horizon`` bars (of this market) before the next
    part starts, so a target (close t+h over close t) of a training bar never reaches a
    validation bar even where this market has missing candles inside the purge gap.
    """
    def at(when: pd.Timestamp) -> int:
        return int(index.searchsorted(when, side="left"))

    val_start, test_start = at(split.val_start), at(split.test_start)
    train_stop = max(0, min(at(split.train_end), val_start - horizon))
    val_stop = max(val_start, min(at(split.val_end), test_start - horizon))
    return SplitBounds((0, train_stop), (val_start, val_stop), (test_start, len(index)))


def check_market_parts(symbol: str, bounds: SplitBounds, split: CalendarSplit,
                       min_train: int) -> None:
    """Refuse a market that has too few bars in a part of the common split.

    Raises
    ------
    ValueError
        Fewer than ``min_train`` training bars, no validation bar or fewer than two test
        bars: the market starts too late or ends too early for the split's dates.
    """
    n_train = bounds.train[1] - bounds.train[0]
    n_val = bounds.val[1] - bounds.val[0]
    n_test = bounds.test[1] - bounds.test[0]
    if n_train < min_train or n_val < 1 or n_test < 2:
        raise ValueError(
            f"{symbol}: too few bars for the common split ({n_train} training bars before "
            f"{split.train_end}, need {min_train}; {n_val} validation; {n_test} test from "
            f"{split.test_start}): it starts too late or ends too early; drop it or give "
            f"markets that overlap more")
