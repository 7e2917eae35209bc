"""QuantStats tearsheet, metrics.json and the terminal summary table."""
from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from bt_lstm.evaluation import PERIODS_PER_YEAR

logger = logging.getLogger(__name__)


def _naive(series: pd.Series) -> pd.Series:
    out = series.copy()
    if getattr(out.index, "tz", None) is not None:
        out.index = out.index.tz_localize(None)
    return out.astype(float)


def write_tearsheet(strategy_daily: pd.Series, benchmark_daily: pd.Series, path: Path,
                    title: str) -> None:
    """Write the QuantStats HTML tearsheet atomically, offline.

    Notes
    -----
    The benchmark is passed as a returns Series aligned to the strategy's dates (a ticker
    string would make QuantStats download it), with 365 periods a year for crypto.
    """
    import matplotlib

    matplotlib.use("Agg")
    import quantstats as qs

    strat = _naive(strategy_daily).rename("Strategy")
    bench = _naive(benchmark_daily).reindex(strat.index).fillna(0.0).rename("Buy & hold")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qs.reports.html(strat, benchmark=bench, output=tmp, title=title,
                            periods_per_year=PERIODS_PER_YEAR, compounded=True,
                            download_filename=path.name)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if kind == "pct":
        return f"{100 * value:,.2f} %"
    if kind == "num":
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


SUMMARY_ROWS = (
    ("Total return", "total_return", "pct"),
    ("CAGR", "cagr", "pct"),
    ("Sharpe", "sharpe", "num"),
    ("Sortino", "sortino", "num"),
    ("Max drawdown", "max_drawdown", "pct"),
    ("Volatility (ann.)", "volatility", "pct"),
    ("Trades", "trades", "int"),
    ("Win rate", "win_rate", "pct"),
    ("Exposure", "exposure", "pct"),
    ("Commission paid", "commission_paid", "num"),
    ("Rejected orders", "rejected_orders", "int"),
    ("Sizes rounded to 0", "rounded_to_zero", "int"),
)


def format_summary(metrics: dict[str, Any]) -> str:
    """A plain-text table of the strategy beside buy-and-hold."""
    strat, bench = metrics["strategy"], metrics["buy_and_hold"]
    head = [f"{metrics['dataset']}  {metrics['period']['start']} -> {metrics['period']['end']}"
            f"  ({metrics['period']['bars']} bars, out of sample, costs included)"]
    width = 22
    head.append(f"{'':<{width}}{'Strategy':>16}{'Buy & hold':>16}")
    for label, key, kind in SUMMARY_ROWS:
        b = bench.get(key)
        head.append(f"{label:<{width}}{_fmt(strat.get(key), kind):>16}"
                    f"{(_fmt(b, kind) if b is not None else '-'):>16}")
    return "\n".join(head)
