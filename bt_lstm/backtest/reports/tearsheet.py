"""The HTML tearsheet: every figure read from the run's metrics (backtest.metrics computes them
once, as the terminal shows them), charts only where the test span fills them, and for a flat
run the skill guard, the forecasts beside the threshold and what to try next."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.backtest.metrics import (
    CONVENTIONS,
    PERIODS_PER_YEAR,
    drawdown_periods,
    period_returns,
)
from bt_lstm.backtest.reports import charts

esc = html.escape
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
STYLE = ("body{font-family:'DejaVu Sans',Arial,sans-serif;margin:2em auto;max-width:1100px;"
         "color:#222}table{border-collapse:collapse;font-size:13px;margin:.5em 0 1em}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}"
         "td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block}"
         ".note{background:#fff4d6;border:1px solid #e0c36b;padding:.6em 1em}"
         ".small{color:#555;font-size:12px}")


@dataclass(frozen=True)
class Diagnostics:
    """What explains a run's trading: the test bars' forecasts, the threshold, the networks'
    own forecasts where the skill guard kept a regime flat, the validation loss curves."""

    traded: np.ndarray
    threshold: float
    raw: np.ndarray | None = None
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _pct(v: Any) -> str:
    return "" if v is None or not np.isfinite(v) else f"{100 * v:.2f} %"


def _img(uri: str | None, alt: str, heading: str) -> str:
    return "" if uri is None else f"<h2>{esc(heading)}</h2><img src=\"{uri}\" alt=\"{esc(alt)}\">"


def drawdown_table(strat: pd.Series, bench: pd.Series) -> str:
    """The deepest drawdowns of each, with "not recovered" for one still open at the end."""
    rows = []
    for label, series in (("Strategy", strat), ("Buy & hold", bench)):
        for d in drawdown_periods(series):
            rows.append(f"<tr><td>{label}</td><td>{d['start']}</td><td>{d['trough']}</td>"
                        f"<td>{d['end'] or 'not recovered'}</td><td>{_pct(d['depth'])}</td>"
                        f"<td>{d['days']}</td></tr>")
    if not rows:
        return "<p>No drawdown: equity never fell below a previous peak.</p>"
    return ("<table><tr><th></th><th>peak</th><th>trough</th><th>recovered</th><th>depth</th>"
            "<th>days</th></tr>" + "".join(rows) + "</table>")


def monthly_table(daily: pd.Series, label: str) -> str:
    """Compounded monthly returns, one row a year, blank for months outside the test span."""
    months = period_returns(daily, "M")
    years = period_returns(daily, "Y")
    if not len(months):
        return ""
    rows = []
    for year in sorted({p.year for p in months.index}):
        cells = []
        for m in range(1, 13):
            key = pd.Period(year=year, month=m, freq="M")
            v = months.get(key)
            colour = ("" if v is None else
                      f" style=\"background:{'#d8f0d8' if v > 0 else '#f6d6d6' if v < 0 else '#fff'}\"")
            cells.append(f"<td{colour}>{_pct(v)}</td>")
        rows.append(f"<tr><td>{year}</td>{''.join(cells)}"
                    f"<td><b>{_pct(years.get(pd.Period(year=year, freq='Y')))}</b></td></tr>")
    head = "".join(f"<th>{m}</th>" for m in MONTHS)
    return (f"<h3>{esc(label)}</h3><table><tr><th></th>{head}<th>year (in test)</th></tr>"
            f"{''.join(rows)}</table>")


def skill_table(skill: dict[str, Any]) -> str:
    """Per regime: validation MSE / zero forecast, Diebold-Mariano p, best epoch, verdict and
    the route the guard chose."""
    rows = []
    for regime in ("bearish", "sideways", "bullish"):
        r = skill.get(regime)
        if not isinstance(r, dict):
            continue
        ratio, p = r.get("ratio"), r.get("dm_p")
        rows.append(f"<tr><td>{regime}</td><td>{esc(str(r.get('model', '')))}</td>"
                    f"<td>{'n/a' if ratio is None else f'{ratio:.4f}'}</td>"
                    f"<td>{'n/a' if p is None else f'{p:.3f}'}</td>"
                    f"<td>{r.get('best_epoch', 'n/a')}</td><td>{esc(str(r.get('verdict')))}</td>"
                    f"<td>{esc(str(r.get('route')))}</td></tr>")
    if not rows:
        return ""
    return (f"<h2>Skill guard</h2><p>Each regime's network against the zero forecast on its "
            f"validation windows (policy --no-skill {esc(str(skill.get('policy')))}, "
            f"--skill-p {skill.get('skill_p')}): a regime trades its network only with a "
            f"validation MSE below zero's and a Diebold-Mariano p at or under --skill-p.</p>"
            f"<table><tr><th>regime</th><th>model</th><th>val MSE / zero</th><th>DM p</th>"
            f"<th>best epoch</th><th>verdict</th><th>route</th></tr>{''.join(rows)}</table>")


def next_steps(metrics: dict[str, Any]) -> str:
    """What to try when a run (nearly) never traded."""
    strat = metrics["strategy"]
    if strat.get("trades", 0) >= 5 and strat.get("exposure", 0) >= 0.05:
        return ""
    reason = metrics.get("no_trades")
    tips = ["<code>--no-skill trade</code>: trade every regime's network whatever its "
            "validation skill, to see what the raw networks would have done (compare with "
            "buy-and-hold before trusting it)",
            "<code>bt-lstm tune</code>: search the networks' settings and the threshold on the "
            "validation tail; its best_config.json feeds <code>--config</code>",
            "<code>bt-lstm walk-forward</code>: retrain on a schedule and judge the models on "
            "many test spans instead of one",
            "<code>--threshold</code> below the forecasts' reach (see the histogram above)"]
    return (f"<h2>Why so little trading, and what to try next</h2>"
            + (f"<p class='note'>{esc(reason)}</p>" if reason else "")
            + "<ul>" + "".join(f"<li>{t}</li>" for t in tips) + "</ul>")


def _header(metrics: dict[str, Any], title: str, n_days: int) -> str:
    per = metrics["period"]
    note = metrics.get("no_trades")
    return (f"<h1>{esc(title)}</h1><p><b>Test span {esc(str(per['start']))} to "
            f"{esc(str(per['end']))}</b> ({per['bars']} bars, {n_days} days), out of sample, "
            f"costs included (commission {metrics['costs']['commission']}, slippage "
            f"{metrics['costs']['slippage']}). The whole span is shown for both the strategy "
            f"and buy-and-hold, from its first bar.</p><p class='small'>Conventions: "
            f"{esc(CONVENTIONS)}.</p>" + (f"<p class='note'>{esc(note)}</p>" if note else ""))


def tearsheet_html(metrics: dict[str, Any], strat: pd.Series, bench: pd.Series, title: str,
                   diagnostics: Diagnostics | None = None) -> str:
    """The whole page: header, summary table, charts, drawdowns, monthly returns, skill guard,
    forecasts beside the threshold, loss curves, luck and next steps."""
    from bt_lstm.backtest.reports import luck_html, summary_html

    parts = [_header(metrics, title, len(bench)), "<h2>Strategy and buy-and-hold</h2>",
             summary_html(metrics),
             _img(charts.equity_chart(strat, bench), "equity: strategy and buy-and-hold",
                  "Growth of 1"),
             _img(charts.drawdown_chart(strat, bench), "drawdown: strategy and buy-and-hold",
                  "Drawdown"),
             _img(charts.rolling_volatility_chart(strat, bench, PERIODS_PER_YEAR),
                  "rolling volatility", f"Rolling {charts.ROLLING_DAYS}-day volatility"),
             "<h2>Worst drawdowns</h2>", drawdown_table(strat, bench),
             "<h2>Monthly returns (test span only)</h2>",
             monthly_table(strat, "Strategy"), monthly_table(bench, "Buy & hold")]
    if isinstance(metrics.get("skill"), dict):
        parts.append(skill_table(metrics["skill"]))
    if diagnostics is not None:
        parts.append(_img(charts.forecast_histogram(diagnostics.traded, diagnostics.raw,
                                                    diagnostics.threshold),
                          "forecasts and the threshold", "Forecasts on test bars and the "
                          "threshold"))
        parts.append(_img(charts.loss_chart(diagnostics.histories), "validation loss curves",
                          "Validation loss per epoch (circle: best epoch, the weights kept)"))
    if metrics.get("statistics"):
        parts.append("<h2>How much could be luck</h2>" + luck_html(metrics))
    parts.append(next_steps(metrics))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}"
            f"<p class='small'>Files: metrics.json (every figure above), returns.csv (the daily "
            f"returns), bars.csv, trades.csv, fills.csv, config.json, manifest.json.</p>"
            f"</body></html>\n")
