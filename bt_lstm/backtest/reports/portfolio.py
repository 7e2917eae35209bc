"""A portfolio run's report files: metrics.json, bars.csv (with ``symbol``), fills, trades, the
daily returns and P&L per market, the tearsheet of the book beside the basket, and the overview
picture of each market's contribution."""
from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bt_lstm.backtest.portfolio import PortfolioResult
from bt_lstm.backtest.reports import _fmt, _naive, save_figure
from bt_lstm.data.files import atomic_write_json, atomic_write_text, clean_json

OVERVIEW = "portfolio_overview.png"
MARKET_ROWS = (("Total return", "total_return", "pct"), ("Sharpe", "sharpe", "num"),
               ("Max drawdown", "max_drawdown", "pct"), ("Trades", "trades", "int"),
               ("Exposure", "exposure", "pct"), ("P&L", "pnl", "num"))


def write_portfolio_report(folder: Path, metrics: dict[str, Any], result: PortfolioResult,
                           daily: Mapping[str, pd.Series], title: str,
                           tearsheet: bool = True) -> list[Path]:
    """Write the report files of a portfolio backtest into ``folder``, each atomically.

    Parameters
    ----------
    metrics
        The whole ``metrics.json`` (``score_portfolio``'s sections, and whatever the job adds).
    daily
        ``score_portfolio``'s daily returns.
    tearsheet
        Write ``tearsheet.html`` (the book beside the equal-weight basket, with a table of the
        markets and the overview picture).

    Returns
    -------
    list of Path
        The files written.
    """
    folder = Path(folder)
    files = {
        "metrics.json": None, "bars.csv": result.bars.to_csv(),
        "fills.csv": result.fills.to_csv(index=False),
        "trades.csv": result.trades.to_csv(index=False),
        "rejected.csv": result.rejected.to_csv(index=False),
        "pnl.csv": result.pnl.assign(total=result.pnl.sum(axis=1),
                                     value=result.equity).to_csv(),
        "returns.csv": pd.DataFrame(dict(daily)).to_csv(),
    }
    for name, text in files.items():
        if text is not None:
            atomic_write_text(folder / name, text)
    atomic_write_json(folder / "metrics.json", clean_json(metrics))
    write_contribution_png(result, folder / OVERVIEW, title)
    written = [folder / name for name in files] + [folder / OVERVIEW]
    if tearsheet:
        write_portfolio_tearsheet(folder / "tearsheet.html", metrics, daily, title)
        written.append(folder / "tearsheet.html")
    return written


def write_contribution_png(result: PortfolioResult, path: Path, title: str) -> None:
    """Each market's cumulative P&L (its fills, costs included) as a line, and the book's
    total, over the whole span (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 5))
    try:
        pnl = result.pnl
        for symbol in result.symbols:
            ax.plot(pnl.index, pnl[symbol].to_numpy(), lw=1, label=symbol)
        ax.plot(pnl.index, pnl.sum(axis=1).to_numpy(), lw=1.8, color="black",
                label="portfolio")
        ax.axhline(0.0, color="#999", lw=0.6)
        ax.set_ylabel("cumulative P&L (cash)")
        ax.set_title(f"{title}: each market's contribution")
        ax.legend(loc="upper left", fontsize=8, ncol=min(6, len(result.symbols) + 1))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def markets_table(metrics: dict[str, Any]) -> str:
    """Each market's sleeve beside its buy-and-hold, as an HTML table."""
    markets = metrics.get("markets") or {}
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _, _ in MARKET_ROWS)
    rows = []
    for symbol, m in markets.items():
        strat, bh = m["strategy"], m["buy_and_hold"]
        cells = "".join(f"<td>{_fmt(strat.get(key), kind)}</td>" for _, key, kind in MARKET_ROWS)
        rows.append(f"<tr><td>{html.escape(symbol)}</td><td>{html.escape(str(m['period']['start']))}"
                    f"</td>{cells}<td>{_fmt(bh.get('total_return'), 'pct')}</td>"
                    f"<td>{_fmt(bh.get('sharpe'), 'num')}</td>"
                    f"<td>{_fmt(m.get('weight', {}).get('mean'), 'pct')}</td></tr>")
    return ("<h2>Markets</h2><p>Each market's sleeve: a nominal equal share of the starting "
            "cash plus the P&amp;L of its own fills (costs included); the sleeves' P&amp;L sum "
            "to the book's. Beside it, that market's buy-and-hold from its first bar.</p>"
            f"<table><tr><th>market</th><th>first bar</th>{head}<th>B&amp;H return</th>"
            f"<th>B&amp;H Sharpe</th><th>mean weight</th></tr>{''.join(rows)}</table>")


def write_portfolio_tearsheet(path: Path, metrics: dict[str, Any],
                              daily: Mapping[str, pd.Series], title: str) -> None:
    """The tearsheet of the book (backtest.reports.tearsheet's page, the basket as its
    benchmark) with the markets' table and the overview picture (atomic)."""
    import base64

    from bt_lstm.backtest.reports.tearsheet import tearsheet_html

    page_metrics = dict(metrics["portfolio"])
    page_metrics.setdefault("dataset", ", ".join(metrics["portfolio"].get("markets", [])))
    strat = _naive(daily["portfolio"])
    bench = _naive(daily["basket"]).reindex(strat.index).fillna(0.0)
    try:
        page = tearsheet_html(page_metrics, strat, bench, title)
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    page = page.replace("<h2>Strategy and buy-and-hold</h2>",
                        "<h2>Portfolio and the equal-weight buy-and-hold basket</h2>", 1)
    extra = markets_table(metrics)
    overview = Path(path).with_name(OVERVIEW)
    if overview.is_file():
        uri = base64.b64encode(overview.read_bytes()).decode("ascii")
        extra += (f"<h2>Each market's contribution</h2><img src=\"data:image/png;base64,{uri}\" "
                  f"alt=\"cumulative P&amp;L per market and the portfolio\">")
    atomic_write_text(path, page.replace("</body>", extra + "</body>", 1))
