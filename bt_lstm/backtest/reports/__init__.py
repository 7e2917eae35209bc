"""The terminal summary table, the HTML tearsheet (tearsheet.py, charts.py) and the run plots."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.data.files import atomic_write_text, temp_beside
from bt_lstm.signals.regimes import REGIME_LABELS

logger = logging.getLogger(__name__)


def _naive(series: pd.Series) -> pd.Series:
    out = series.copy()
    if getattr(out.index, "tz", None) is not None:
        out.index = out.index.tz_localize(None)
    return out.astype(float)


def write_tearsheet(path: Path, metrics: dict[str, Any], strategy_daily: pd.Series,
                    benchmark_daily: pd.Series, title: str,
                    diagnostics: Any | None = None) -> None:
    """Write the HTML tearsheet atomically: every figure from ``metrics`` (the terminal's
    numbers), charts of the daily returns over the whole test span.

    Notes
    -----
    QuantStats' own page is not used: it cuts the series at the strategy's first trade,
    computes its own figures and draws empty rolling charts on short tests (PITFALLS.md).
    ``diagnostics`` (a ``tearsheet.Diagnostics``) adds the forecasts beside the threshold and
    the validation loss curves.
    """
    from bt_lstm.backtest.reports.tearsheet import tearsheet_html

    strat = _naive(strategy_daily)
    bench = _naive(benchmark_daily).reindex(strat.index).fillna(0.0) if len(strat) else \
        _naive(benchmark_daily)
    try:
        page = tearsheet_html(metrics, strat, bench, title, diagnostics)
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    atomic_write_text(path, page)


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


REGIME_COLOURS = {0: "#d62728", 1: "#7f7f7f", 2: "#2ca02c", -1: "#c7c7c7"}


def write_overview_png(candles: pd.DataFrame, regimes: pd.Series, boundaries: list,
                       equity: pd.Series, bh_equity: pd.Series, path: Path, title: str) -> None:
    """Price coloured by regime with fold boundaries, above equity vs buy-and-hold (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    try:
        close = candles["close"]
        top.plot(close.index, close.to_numpy(), color="#bbbbbb", lw=0.6, zorder=1)
        labels = regimes.reindex(close.index).fillna(-1).astype(int)
        names = {0: "bearish", 1: "sideways", 2: "bullish", -1: "unknown"}
        for r, colour in REGIME_COLOURS.items():
            mask = (labels == r).to_numpy()
            if mask.any():
                top.scatter(close.index[mask], close.to_numpy()[mask], s=1.5, color=colour,
                            label=names[r], zorder=2)
        for when in boundaries:
            for ax in (top, bottom):
                ax.axvline(when, color="#1f77b4", lw=0.6, ls="--", alpha=0.6)
        top.set_yscale("log")
        top.set_ylabel("close (log)")
        top.legend(loc="upper left", markerscale=6, fontsize=8)
        top.set_title(title)
        bottom.plot(equity.index, equity.to_numpy() / equity.iloc[0], label="strategy", lw=1)
        bottom.plot(bh_equity.index, bh_equity.to_numpy() / bh_equity.iloc[0],
                    label="buy & hold", lw=1)
        bottom.set_ylabel("equity (start = 1)")
        bottom.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


def write_forecast_plot(table: pd.DataFrame, path: Path, dataset: str) -> None:
    """Forecast vs realised scatter per regime (regime model and global LSTM), atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5), sharex=True, sharey=True)
    try:
        lim = float(np.nanpercentile(np.abs(table["realised"]), 99.5)) or 1e-3
        for r, ax in enumerate(axes):
            part = table[table["regime"] == r]
            ax.scatter(part["regime_model"], part["realised"], s=3, alpha=0.4, label="regime model")
            ax.scatter(part["global_lstm"], part["realised"], s=3, alpha=0.3, label="global LSTM")
            ax.axhline(0, color="#999", lw=0.5)
            ax.axvline(0, color="#999", lw=0.5)
            ax.set_title(f"{REGIME_LABELS[r]} ({len(part)} bars)")
            ax.set_xlabel("forecast (log return)")
            ax.set_ylim(-lim, lim)
        axes[0].set_ylabel("realised next-bar log return")
        axes[0].legend(fontsize=8, markerscale=3)
        fig.suptitle(f"{dataset}: forecast vs realised on test bars")
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG atomically: a temp file beside ``path``, then rename."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary_html(metrics: dict[str, Any]) -> str:
    """The strategy beside buy-and-hold as an HTML table (same rows as the terminal)."""
    import html

    strat, bench = metrics["strategy"], metrics["buy_and_hold"]
    rows = ["<tr><th></th><th>Strategy</th><th>Buy &amp; hold</th></tr>"]
    for label, key, kind in SUMMARY_ROWS:
        b = bench.get(key)
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{_fmt(strat.get(key), kind)}</td>"
                    f"<td>{_fmt(b, kind) if b is not None else '-'}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def format_luck(stats: dict[str, Any]) -> str:
    """One line: 'Sharpe 1.10, 95 % CI [-0.40, 2.50], PSR 0.81, DSR 0.42 (N = 60)'.

    ``stats`` is ``metrics["statistics"]``: Sharpe annualised, interval from the stationary
    bootstrap, PSR against a Sharpe of 0, DSR given N configurations tried.
    """
    lo, hi = stats["bootstrap"]["strategy"]["sharpe"]
    level = round(100 * stats["bootstrap"]["level"])
    dsr = stats["dsr"]
    return (f"Sharpe {_num(stats['sharpe'])}, {level} % CI [{_num(lo)}, {_num(hi)}], "
            f"PSR {_num(stats['psr']['vs_zero'])}, DSR {_num(dsr['value'])} "
            f"(N = {dsr['n_trials']})")


def format_seed_spread(spread: dict[str, Any]) -> str:
    """Plain-text lines: each seed's Sharpe, return and MSE ratio to zero, then mean and std."""
    lines = [f"{'seed':>6}  {'Sharpe':>8}  {'return':>10}  {'MSE/zero':>8}"]
    rows = [(str(r["seed"]), r) for r in spread["runs"]]
    rows += [("mean", spread["mean"]), ("std", spread["std"])]
    for label, r in rows:
        ret = r.get("total_return")
        ret_text = "n/a" if ret is None else f"{100 * ret:.2f} %"
        lines.append(f"{label:>6}  {_num(r.get('sharpe')):>8}  {ret_text:>10}  "
                     f"{_num(r.get('mse_ratio'), 4):>8}")
    return "\n".join(lines)


def luck_html(metrics: dict[str, Any]) -> str:
    """The luck statistics (and the seed spread when there is one) as HTML paragraphs and tables."""
    import html

    stats = metrics.get("statistics")
    if not stats:
        return ""
    boot, psr = stats["bootstrap"], stats["psr"]
    pct = {"sharpe": lambda v: _num(v), "total_return": lambda v: _fmt(v, "pct"),
           "max_drawdown": lambda v: _fmt(v, "pct")}
    rows = ["<tr><th>95 % interval</th><th>Strategy</th><th>Buy &amp; hold</th></tr>"]
    for key, label in (("sharpe", "Sharpe"), ("total_return", "Total return"),
                       ("max_drawdown", "Max drawdown")):
        cells = [f"[{pct[key](a)}, {pct[key](b)}]" for a, b in (boot["strategy"][key],
                                                                 boot["buy_and_hold"][key])]
        rows.append(f"<tr><td>{label}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
    d_lo, d_hi = boot["sharpe_difference"]
    out = [f"<p><b>{html.escape(format_luck(stats))}</b></p>",
           f"<p>{html.escape(stats['reading'])}</p>",
           f"<p>PSR against buy-and-hold's Sharpe ({_num(psr['buy_and_hold_sharpe'])}): "
           f"{_num(psr['vs_buy_and_hold'])}; difference of Sharpes, 95 % interval "
           f"[{_num(d_lo)}, {_num(d_hi)}]. Expected maximum Sharpe of "
           f"{stats['dsr']['n_trials']} trials by luck: "
           f"{_num(stats['dsr']['expected_max_sharpe'])}. Stationary block bootstrap of "
           f"{stats['n']} daily returns, mean block {boot['block_length']:.1f} days, "
           f"{boot['reps']} draws, seed {boot['seed']}.</p>",
           "<table>" + "".join(rows) + "</table>"]
    spread = metrics.get("seed_spread")
    if spread:
        head = "<tr><th>seed</th><th>Sharpe</th><th>Total return</th><th>MSE / zero</th></tr>"
        body = [f"<tr><td>{html.escape(str(label))}</td><td>{_num(r.get('sharpe'))}</td>"
                f"<td>{_fmt(r.get('total_return'), 'pct')}</td>"
                f"<td>{_num(r.get('mse_ratio'), 4)}</td></tr>"
                for label, r in [(r["seed"], r) for r in spread["runs"]]
                + [("mean", spread["mean"]), ("std", spread["std"])]]
        out.append(f"<h3>Seed spread ({len(spread['runs'])} seeds, ensemble "
                   f"{html.escape(str(spread.get('ensemble', 'none')))})</h3><table>{head}{''.join(body)}</table>")
    return "".join(out)
