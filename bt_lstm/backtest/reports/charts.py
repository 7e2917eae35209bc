"""The tearsheet's charts (matplotlib, Agg): each returned as a PNG data URI, or None when the
run cannot fill it (a chart is dropped rather than drawn empty)."""
from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd

STRATEGY, BUY_AND_HOLD = "#1f77b4", "#ff7f0e"
REGIME_COLOURS = {"bearish": "#d62728", "sideways": "#7f7f7f", "bullish": "#2ca02c"}
ROLLING_DAYS = 30  # rolling window of the rolling-volatility chart


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def equity_chart(strat: pd.Series, bench: pd.Series) -> str | None:
    """Growth of 1 (compounded daily returns) of the strategy and of buy-and-hold."""
    if not len(bench):
        return None
    fig, ax = _pyplot().subplots(figsize=(11, 3.6))
    for series, label, colour in ((strat, "strategy", STRATEGY), (bench, "buy & hold",
                                                                   BUY_AND_HOLD)):
        if len(series):
            ax.plot(series.index, np.cumprod(1.0 + series.to_numpy()), label=label,
                    color=colour, lw=1.2)
    ax.axhline(1.0, color="#999", lw=0.6)
    ax.set_ylabel("growth of 1")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _data_uri(fig)


def drawdown_chart(strat: pd.Series, bench: pd.Series) -> str | None:
    """Fall below the running peak, strategy and buy-and-hold."""
    if not len(bench):
        return None
    fig, ax = _pyplot().subplots(figsize=(11, 2.6))
    for series, label, colour in ((bench, "buy & hold", BUY_AND_HOLD), (strat, "strategy",
                                                                         STRATEGY)):
        if len(series):
            eq = np.cumprod(1.0 + series.to_numpy())
            dd = eq / np.maximum.accumulate(np.maximum(eq, 1.0)) - 1.0
            ax.fill_between(series.index, 100 * dd, 0, color=colour, alpha=0.35, label=label)
    ax.set_ylabel("drawdown (%)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _data_uri(fig)


def rolling_volatility_chart(strat: pd.Series, bench: pd.Series,
                             periods_per_year: int) -> str | None:
    """Annualised volatility over a rolling window; dropped when the run is shorter than three
    windows (the chart would be mostly empty)."""
    if len(bench) < 3 * ROLLING_DAYS:
        return None
    fig, ax = _pyplot().subplots(figsize=(11, 2.6))
    root = np.sqrt(periods_per_year)
    for series, label, colour in ((strat, "strategy", STRATEGY), (bench, "buy & hold",
                                                                   BUY_AND_HOLD)):
        vol = series.rolling(ROLLING_DAYS).std(ddof=1) * root * 100
        ax.plot(vol.index, vol.to_numpy(), label=label, color=colour, lw=1)
    ax.set_ylabel(f"{ROLLING_DAYS}-day volatility (%)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _data_uri(fig)


def forecast_histogram(traded: np.ndarray, raw: np.ndarray | None,
                       threshold: float) -> str | None:
    """Histogram of the test bars' forecasts with the +-threshold lines (a position needs
    |forecast| above the threshold). ``raw``: the networks' own forecasts where the skill guard
    kept a regime flat."""
    sets = [(a[np.isfinite(a)], label, colour) for a, label, colour in
            ((raw, "networks' forecasts (before the skill guard)", "#9467bd"),
             (traded, "forecasts traded on", STRATEGY)) if a is not None]
    sets = [s for s in sets if len(s[0]) and np.ptp(s[0]) > 0]
    if not sets:
        return None
    reach = max(float(np.max(np.abs(a))) for a, _, _ in sets)
    lim = max(reach, threshold) * 1.1
    fig, ax = _pyplot().subplots(figsize=(11, 3))
    bins = np.linspace(-lim, lim, 81)
    for a, label, colour in sets:
        ax.hist(a, bins=bins, alpha=0.55, label=label, color=colour)
    for x in (-threshold, threshold):
        ax.axvline(x, color="#d62728", lw=1.2, ls="--")
    ax.plot([], [], color="#d62728", ls="--", label=f"+-threshold ({threshold:g})")
    ax.set_xlabel("forecast (next-bar log return)")
    ax.set_ylabel("bars")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _data_uri(fig)


def loss_chart(histories: dict[str, list[dict[str, Any]]]) -> str | None:
    """Validation loss per epoch of each regime's network (scaled MSE), best epoch marked."""
    curves = {k: h for k, h in histories.items() if h}
    if not curves:
        return None
    fig, ax = _pyplot().subplots(figsize=(11, 3))
    for name, hist in curves.items():
        epochs = [h["epoch"] for h in hist]
        val = [h["val_loss"] for h in hist]
        colour = REGIME_COLOURS.get(name.split(" ")[0])
        ax.plot(epochs, val, marker="o", ms=3, label=name, color=colour, lw=1.2)
        best = int(np.argmin(val))
        ax.scatter([epochs[best]], [val[best]], s=60, facecolors="none", edgecolors="k")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (scaled MSE)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _data_uri(fig)
