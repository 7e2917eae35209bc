"""The portfolio job: several markets, one calendar split, panel models, one portfolio backtest
of every market's test span, written to ``reports/portfolio_<NAME>_<tf>/<stamp>/``.

A run with one market is not this job: the commands send it to the main job unchanged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from bt_lstm import __version__
from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import fingerprint_frame
from bt_lstm.data.files import atomic_write_json, clean_json, staged_folder
from bt_lstm.data.panel import Panel, align_markets
from bt_lstm.jobs.backtest import luck_figures, skill_summary
from bt_lstm.jobs.panel_models import obtain_panel, panel_key
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import finish_run, new_run_dir, run_id
from bt_lstm.models.forecast import Forecaster
from bt_lstm.models.skill import FLAT
from bt_lstm.research.panel import PANEL_MODES, panel_bounds
from bt_lstm.research.pipeline import ProgressFactory, check_enough_bars
from bt_lstm.signals.calendar import CalendarSplit, calendar_split, check_market_parts
from bt_lstm.signals.groups import data_bar, group_warmup_bars
from bt_lstm.signals.windows import SplitBounds

logger = logging.getLogger(__name__)


@dataclass
class PanelPlan:
    """The aligned markets, the common calendar split and each market's bar ranges."""

    panel: Panel
    split: CalendarSplit
    bounds: dict[str, SplitBounds]


@dataclass
class PortfolioJobResult:
    """The portfolio job's figures, its run folder and every file written there."""

    metrics: dict[str, Any]
    report_dir: Path
    model_dir: Path
    reused_models: bool
    backtest: Any
    files: list[Path] = field(default_factory=list)


def plan_panel(frames: Mapping[str, pd.DataFrame], cfg: PipelineConfig) -> PanelPlan:
    """Align the markets, cut the common calendar split and check every market's parts.

    Raises
    ------
    ValueError
        The same market twice, mixed timeframes, too few bars on the common timeline, or a
        market with too few bars in a part of the split (one line naming it).
    """
    panel = align_markets(frames)
    timeline = panel.timeline()
    check_enough_bars(len(timeline), cfg, panel.name, data_bar(timeline))
    split = calendar_split(timeline, cfg.windows)
    bounds = panel_bounds(panel.frames, split, cfg)
    for sym, b in bounds.items():
        check_market_parts(sym, b, split, min_market_train(cfg, panel.bar))
    return PanelPlan(panel, split, bounds)


def min_market_train(cfg: PipelineConfig, bar: pd.Timedelta | None = None) -> int:
    """Fewest training bars a market needs in a split: feature warm-up (with ``bar``, that of
    every group, an ``htf:TF`` group's in higher candles), trend window and lookback, then 50
    bars to fit its regime classifier and scaler on (``min_bars``' margin)."""
    warmup = group_warmup_bars(cfg.features, bar)
    return max(warmup, cfg.regimes.trend_bars) + cfg.windows.lookback + 50


def forecast_test_span(plan: PanelPlan, forecasters: Mapping[str, Forecaster]
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Per market: its test candles and its batch forecasts over them (``regime``, ``model``,
    ``forecast``), each from the market's own forecaster on its own bars up to that bar."""
    candles, signals = {}, {}
    for sym, frame in plan.panel.frames.items():
        start = plan.bounds[sym].test[0]
        candles[sym] = frame.iloc[start:]
        signals[sym] = forecasters[sym].forecast_frame(frame, start).iloc[start:]
    return candles, signals


def market_models(fc: Forecaster) -> dict[str, Any]:
    """Which networks trade a market (and which regimes stay flat) under the skill guard."""
    routes = fc.routes()
    return {"models_traded": sorted({r for r in routes.values() if r != FLAT}),
            "flat_regimes": sum(r == FLAT for r in routes.values())}


def run_portfolio_job(frames: Mapping[str, pd.DataFrame], cfg: PipelineConfig,
                      strategy_cls: type, model_dir: Path, report_dir: Path,
                      panel: str = "pooled", allocation: str = "equal", retrain: bool = False,
                      timeframe: str | None = None,
                      progress_factory: ProgressFactory | None = None,
                      tearsheet: bool = True) -> PortfolioJobResult:
    """Fit (or reuse) the panel's models, backtest the test span as one portfolio, write the
    run folder.

    Notes
    -----
    Train, validation and test are cut by date, the same for every market (``CalendarSplit``),
    so no market's test bar is earlier than the common test start. Each market's forecasts
    come from its own scaler and regimes, fitted on its own training bars.
    """
    if panel not in PANEL_MODES:
        raise ValueError(f"--panel {panel!r}: use one of {', '.join(PANEL_MODES)}")
    plan = plan_panel(frames, cfg)
    forecasters, reused = obtain_panel(plan.panel.frames, cfg, plan.split, panel, model_dir,
                                       retrain, progress_factory)
    candles, signals = forecast_test_span(plan, forecasters)
    from bt_lstm.backtest.portfolio import run_portfolio_backtest

    result = run_portfolio_backtest(candles, signals, strategy_cls, cfg.strategy,
                                    allocation=allocation, bar=plan.panel.bar)
    from bt_lstm.backtest.portfolio_metrics import score_portfolio
    from bt_lstm.backtest.reports.portfolio import write_portfolio_report

    figures, daily = score_portfolio(candles, result, cfg,
                                     luck=lambda s, b: luck_figures(s, b, cfg))
    metrics = portfolio_metrics(plan, forecasters, candles, figures, cfg, panel, allocation,
                                timeframe, reused, model_dir)
    run_dir = new_run_dir(report_dir)
    run = {"job": "portfolio", "run_id": run_id(run_dir, report_dir.parent),
           "dataset": plan.panel.name, "timeframe": timeframe,
           "data_fingerprint": {m: fingerprint_frame(f) for m, f in plan.panel.frames.items()},
           "bars": {m: len(f) for m, f in plan.panel.frames.items()},
           "first_bar": str(plan.split.train_start), "last_bar": str(plan.panel.timeline()[-1]),
           "seeds": {"train": cfg.train.seed, "regimes": cfg.train.seed,
                     "bootstrap": cfg.train.seed},
           "models": {"dir": str(model_dir),
                      "model_key": panel_key(plan.panel.frames, cfg, plan.split, panel)}}
    with staged_folder(run_dir) as staged:
        atomic_write_json(staged / "config.json", cfg.to_dict())
        write_portfolio_report(staged, clean_json(metrics), result, daily,
                               f"bt-lstm: {plan.panel.name} (out of sample, after costs)",
                               tearsheet=tearsheet)
        write_manifest(staged, **run)
    files = finish_run(run_dir, report_dir.parent)
    return PortfolioJobResult(metrics, run_dir, model_dir, reused, result, files)


def portfolio_metrics(plan: PanelPlan, forecasters: Mapping[str, Forecaster],
                      candles: Mapping[str, pd.DataFrame], figures: dict[str, Any],
                      cfg: PipelineConfig,
                      panel: str, allocation: str, timeframe: str | None, reused: bool,
                      model_dir: Path) -> dict[str, Any]:
    """metrics.json: ``portfolio`` (``score_portfolio``'s figures beside the equal-weight
    basket, luck statistics, the networks each market trades) and ``markets`` (per market: its
    figures and buy-and-hold, skill summary, networks traded, data report and test span)."""
    markets: dict[str, Any] = {}
    for sym, fc in forecasters.items():
        markets[sym] = dict(figures["markets"].get(sym, {}), skill=skill_summary(fc),
                            **market_models(fc), data=plan.panel.reports[sym].to_dict(),
                            test={"start": str(candles[sym].index[0]),
                                  "end": str(candles[sym].index[-1]),
                                  "bars": len(candles[sym])})
    port = dict(figures["portfolio"])
    port["skill"] = {sym: m["models_traded"] for sym, m in markets.items()}
    port["models_traded"] = sum(len(m["models_traded"]) for m in markets.values())
    return {"dataset": plan.panel.name, "timeframe": timeframe, "library_version": __version__,
            "panel": panel, "allocation": allocation, "split": plan.split.to_dict(),
            "portfolio": port, "markets": markets,
            "costs": {"commission": cfg.strategy.commission,
                      "slippage": cfg.strategy.slippage},
            "models": {"dir": str(model_dir), "reused": reused}}

