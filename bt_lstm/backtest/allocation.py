"""Portfolio allocation: each market's target fraction of equity (``equal`` or ``inverse-vol``)
and the trailing volatility the inverse-vol weights read. Plain numpy and pandas, causal.

The rules (docs/guides/portfolio-backtest.md):

``equal``
    ``fraction / N`` for each of the run's N markets. A market that has not started yet still
    counts in N: its share waits in cash, so the weights of the markets trading never sum to
    more than ``fraction`` and do not change when a market joins.
``inverse-vol``
    The markets with a volatility estimate at the close of t (started, with ``vol_bars``
    returns of their own) share ``fraction x n_with / N`` in proportion to ``1 / vol``; a
    market without one has weight 0 and its ``1 / N`` share waits in cash, as for ``equal``.
    With equal volatilities the weights are ``equal``'s.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

ALLOCATIONS = ("equal", "inverse-vol")
VOL_BARS = 60  # trailing bars of a market's own log returns for its inverse-vol weight


def check_allocation(allocation: str) -> str:
    """``allocation`` when it is one of ``ALLOCATIONS``.

    Raises
    ------
    ValueError
        Another name (the message lists the allowed ones).
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"--allocation {allocation!r}: use one of {', '.join(ALLOCATIONS)}")
    return allocation


def trailing_volatility(close: pd.Series, vol_bars: int = VOL_BARS) -> pd.Series:
    """Standard deviation (ddof 1) of the last ``vol_bars`` log returns of ``close``, on the
    market's own bars.

    Notes
    -----
    The value at t reads closes up to t only (a trailing window, never centred); NaN until
    ``vol_bars`` returns exist. A market's first bar has no return.
    """
    if vol_bars < 2:
        raise ValueError(f"vol_bars={vol_bars}: the volatility needs at least 2 returns")
    returns = np.log(close.astype(float)).diff()
    return returns.rolling(vol_bars, min_periods=vol_bars).std(ddof=1).rename("vol")


def allocation_weights(allocation: str, fraction: float, vols: np.ndarray) -> np.ndarray:
    """Each market's target fraction of equity at one close.

    Parameters
    ----------
    allocation
        ``equal`` or ``inverse-vol`` (see the module docstring).
    fraction
        The whole book's fraction of equity (``--fraction``).
    vols
        Each market's trailing volatility known at this close (NaN: none yet, or not started);
        read only by ``inverse-vol``.

    Returns
    -------
    numpy.ndarray
        One weight per market, each >= 0, summing to at most ``fraction``.

    Examples
    --------
    >>> allocation_weights("inverse-vol", 0.9, np.array([0.01, 0.02, np.nan]))
    array([0.4, 0.2, 0. ])
    """
    vols = np.asarray(vols, dtype=float)
    n = len(vols)
    if allocation == "equal":
        return np.full(n, fraction / n)
    check_allocation(allocation)
    known = np.isfinite(vols) & (vols > 0)
    inverse = np.where(known, 1.0 / np.where(known, vols, 1.0), 0.0)
    total = inverse.sum()
    if total <= 0:
        return np.zeros(n)
    return fraction * (known.sum() / n) * inverse / total
