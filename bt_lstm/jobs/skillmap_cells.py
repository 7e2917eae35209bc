"""The cells of the skill map: one cell's walk-forward run, and each market's row from it.

A per-market cell is one market's own walk-forward (``run_walk_forward``). With ``--panel
pooled`` the cells of one setting (feature set x horizon x target) over all the markets run as
ONE panel walk-forward (``run_portfolio_walk_forward``): every fold's networks train on all the
markets' windows, and each market gets its row from its own stitched forecasts, its sleeve's
daily returns after costs and its fold models' skill. Both paths score a market through the
same :func:`cell_row`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bt_lstm.backtest.metrics import PERIODS_PER_YEAR
from bt_lstm.config import PipelineConfig
from bt_lstm.data.files import atomic_write_json, clean_json
from bt_lstm.jobs.portfolio_wf import PortfolioWalkForward, run_portfolio_walk_forward
from bt_lstm.jobs.walk_forward import WalkForwardResult, run_walk_forward
from bt_lstm.research.skillmap import Cell, forecast_figures, trading_figures
from bt_lstm.research.walkforward import TaskProgress, WalkForwardSpec

PANEL_MARKET = "panel"  # a pooled cell's folder: cells/<features>_h<H>_<target>_panel


@dataclass
class MarketData:
    """One market of the map: its candles, names and where they came from (for --resume)."""

    name: str
    timeframe: str
    frame: pd.DataFrame
    source: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellRun:
    """How the cells of a map run: the strategies, the parallelism and the progress bars."""

    strategy_cls: type  # a one-market walk-forward's
    portfolio_cls: type | None = None  # a pooled panel walk-forward's
    jobs: int = 1
    scheduler: str | None = None
    start_progress: Callable[[int, int], TaskProgress] | None = None


@dataclass(frozen=True)
class MarketOutcome:
    """What one market's out-of-sample run gives its row.

    ``forecasts`` has ``forecast`` and ``realised`` on the stitched test bars; ``daily`` is the
    market's daily return after costs (its own book, or its sleeve of the panel's book);
    ``skill`` counts its fold x regime models (``fold_regime_models``, ``with_skill``,
    ``traded``).
    """

    forecasts: pd.DataFrame
    daily: pd.Series
    skill: dict[str, int]
    trades: Any
    folds: int


def walk_forward_outcome(result: WalkForwardResult) -> MarketOutcome:
    """The outcome of a one-market walk-forward (its run folder's returns.csv)."""
    daily = pd.read_csv(result.run_dir / "returns.csv", index_col=0)["strategy"]
    return MarketOutcome(result.forecasts, daily, result.metrics["skill"],
                         result.metrics["strategy"].get("trades"), len(result.folds))


def panel_outcomes(result: PortfolioWalkForward) -> dict[str, MarketOutcome]:
    """Each market's outcome in a panel walk-forward: its stitched forecasts, its sleeve's
    daily returns (``stitched/returns.csv``), its skill counts and the folds it was in."""
    daily = pd.read_csv(result.run_dir / "stitched" / "returns.csv", index_col=0)
    out = {}
    for m, fc in result.forecasts.items():
        figures = result.metrics["markets"][m]
        out[m] = MarketOutcome(fc, daily[m].dropna(), figures["skill"],
                               figures["strategy"].get("trades"),
                               int((result.folds["symbol"] == m).sum()))
    return out


def cell_row(cell: Cell, cfg: PipelineConfig, out: MarketOutcome) -> dict[str, Any]:
    """The figures of one market's cell (before the correction over cells)."""
    fc = out.forecasts
    models = out.skill["fold_regime_models"]
    return numbers(clean_json({
        "market": cell.market, "features": cell.feature_label, "horizon": cell.horizon,
        "target": cell.target, "cell_id": cell.cell_id, "gap_bars": cfg.windows.gap_bars,
        "folds": out.folds,
        **forecast_figures(fc["forecast"].to_numpy(), fc["realised"].to_numpy(), cell.horizon,
                           cfg.train.seed),
        "fold_models": models, "with_skill": out.skill["with_skill"],
        "traded_models": out.skill["traded"],
        "skill_share": out.skill["with_skill"] / models if models else float("nan"),
        "trades": out.trades,
        **trading_figures(out.daily.to_numpy(), PERIODS_PER_YEAR)}))


def numbers(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON stores it (no NaN: None) back to numbers: None is NaN again."""
    return {k: float("nan") if v is None else v for k, v in row.items()}


def row_path(run_dir: Path, cell: Cell) -> Path:
    """Where a finished cell's row is kept (``rows/<cell_id>.json``)."""
    return run_dir / "rows" / f"{cell.cell_id}.json"


def read_row(run_dir: Path, cell: Cell) -> dict[str, Any] | None:
    """The saved row of ``cell``, or None when the cell has not finished."""
    path = row_path(run_dir, cell)
    return numbers(json.loads(path.read_text())) if path.is_file() else None


def panel_folder(run_dir: Path, cell: Cell) -> Path:
    """The folder of the pooled panel walk-forward that ``cell``'s setting runs in."""
    return run_dir / "cells" / Cell(cell.features, cell.horizon, cell.target,
                                    PANEL_MARKET).cell_id


def run_market_cell(cell: Cell, cfg: PipelineConfig, market: MarketData, spec: WalkForwardSpec,
                    run: CellRun, run_dir: Path) -> dict[str, Any]:
    """One market's own walk-forward for ``cell`` (resumed from its saved folds), its row
    written atomically."""
    wf_dir = run_dir / "cells" / cell.cell_id
    started = (wf_dir / "manifest.json").is_file()  # killed mid-cell: its folds are kept
    result = run_walk_forward(market.frame, market.name, market.timeframe, cfg, spec,
                              run.strategy_cls, wf_dir, market.source, jobs=run.jobs,
                              scheduler=run.scheduler, resume=started, tearsheet=False,
                              force=wf_dir.exists() and not started,
                              start_progress=run.start_progress,
                              reports_root=run_dir / "cells")
    row = cell_row(cell, cfg, walk_forward_outcome(result))
    atomic_write_json(row_path(run_dir, cell), clean_json(row))
    return row


def run_panel_cell(cells: list[Cell], cfg: PipelineConfig, markets: list[MarketData],
                   spec: WalkForwardSpec, run: CellRun, run_dir: Path
                   ) -> dict[str, dict[str, Any]]:
    """One pooled panel walk-forward over every market for the cells of one setting (resumed
    from its saved folds); each market's row written atomically unless kept from before.

    Returns
    -------
    cell_id -> row, for every cell of ``cells``.
    """
    if run.portfolio_cls is None:
        raise ValueError("a pooled skill map needs the portfolio strategy")
    wf_dir = panel_folder(run_dir, cells[0])
    started = (wf_dir / "manifest.json").is_file()
    result = run_portfolio_walk_forward(
        {m.name: m.frame for m in markets}, cfg, spec, run.portfolio_cls, wf_dir,
        run_dir / "cells", panel="pooled", timeframe=markets[0].timeframe, tearsheet=False,
        jobs=run.jobs, scheduler=run.scheduler, resume=started,
        force=wf_dir.exists() and not started,
        source={"markets": [m.source for m in markets]})
    outcomes = panel_outcomes(result)
    rows = {}
    for cell in cells:
        rows[cell.cell_id] = read_row(run_dir, cell)
        if rows[cell.cell_id] is None:
            rows[cell.cell_id] = cell_row(cell, cfg, outcomes[cell.market])
            atomic_write_json(row_path(run_dir, cell), clean_json(rows[cell.cell_id]))
    return rows
