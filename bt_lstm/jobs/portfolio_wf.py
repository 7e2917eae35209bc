"""Walk-forward over several markets: calendar folds (the same dates for every market), panel
models per fold, every market's test spans stitched and traded as one portfolio.

A market joins at the first fold in which it has enough bars of that fold's training span; it
never skips a fold afterwards (a held position would ride through an untraded span).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from bt_lstm import __version__
from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import fingerprint_frame
from bt_lstm.data.files import atomic_write_json, atomic_write_text, clean_json, staged_folder
from bt_lstm.data.panel import align_markets
from bt_lstm.jobs.backtest import luck_figures, skill_summary
from bt_lstm.jobs.panel_models import obtain_panel
from bt_lstm.jobs.portfolio import market_models, min_market_train
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import mark_latest, write_index, written_files
from bt_lstm.research.panel import PANEL_MODES, panel_bounds
from bt_lstm.research.pipeline import ProgressFactory
from bt_lstm.research.walkforward import Fold, WalkForwardSpec, make_folds
from bt_lstm.signals.calendar import CalendarSplit, check_market_parts

logger = logging.getLogger(__name__)


@dataclass
class PortfolioWalkForward:
    """The stitched portfolio run: its folder, figures, fold table and backtest."""

    run_dir: Path
    metrics: dict[str, Any]
    folds: pd.DataFrame
    backtest: Any
    files: list[Path]


def fold_split(timeline: pd.DatetimeIndex, fold: Fold) -> CalendarSplit:
    """A fold's bar ranges on the common timeline as dates (the fit part, validation, test)."""
    return CalendarSplit(timeline[fold.fit[0]], timeline[fold.fit[1]], timeline[fold.val[0]],
                         timeline[fold.val[1]], timeline[fold.test[0]])


def _fold_frames(frames: Mapping[str, pd.DataFrame], timeline: pd.DatetimeIndex,
                 fold: Fold) -> dict[str, pd.DataFrame]:
    """Each market's bars from the fold's training start up to the end of its test span."""
    start = timeline[fold.train[0]]
    end = timeline[fold.test[1]] if fold.test[1] < len(timeline) else None
    return {m: f[(f.index >= start) & ((f.index < end) if end is not None else True)]
            for m, f in frames.items()}


def _eligible(subs: Mapping[str, pd.DataFrame], split: CalendarSplit, cfg: PipelineConfig,
              joined: set[str], fold: Fold) -> list[str]:
    out = []
    for m, b in panel_bounds(subs, split, cfg).items():
        try:
            check_market_parts(m, b, split, min_market_train(cfg))
        except ValueError:
            if m in joined and b.test[1] > b.test[0]:
                raise ValueError(f"{m}: too few bars in the training span of fold "
                                 f"{fold.index} after it joined at an earlier fold (a gap of "
                                 f"months?); trim it with --start/--end or drop it") from None
            continue
        out.append(m)
    return out


def run_portfolio_walk_forward(frames: Mapping[str, pd.DataFrame], cfg: PipelineConfig,
                               spec: WalkForwardSpec, strategy_cls: type, run_dir: Path,
                               reports_root: Path, panel: str = "pooled",
                               allocation: str = "equal", timeframe: str | None = None,
                               progress_factory: ProgressFactory | None = None,
                               tearsheet: bool = True) -> PortfolioWalkForward:
    """Plan calendar folds on the markets' common timeline, fit (or reuse) each fold's panel
    models, forecast each market's test spans and backtest them as one portfolio.

    Notes
    -----
    Every fold is cut by date, the same for all markets, with the purge gap of the plan
    (``make_folds`` on the common timeline); each market's bars follow from the dates. Fold
    bundles are saved under ``run_dir/folds/fold_<i>/<market>/`` and reused by a rerun.
    """
    if panel not in PANEL_MODES:
        raise ValueError(f"--panel {panel!r}: use one of {', '.join(PANEL_MODES)}")
    aligned = align_markets(frames)
    timeline = aligned.timeline()
    folds = make_folds(len(timeline), spec, cfg)
    candles: dict[str, list[pd.DataFrame]] = {}
    signals: dict[str, list[pd.DataFrame]] = {}
    rows = []
    for fold in folds:
        split = fold_split(timeline, fold)
        subs = _fold_frames(aligned.frames, timeline, fold)
        markets = _eligible(subs, split, cfg, set(candles), fold)
        if not markets:
            raise ValueError(f"fold {fold.index}: no market has enough bars for its spans")
        mine = {m: subs[m] for m in markets}
        fcs, _ = obtain_panel(mine, cfg, split, panel, run_dir / "folds" /
                              f"fold_{fold.index:03d}", False, progress_factory)
        bounds = panel_bounds(mine, split, cfg)
        for m in markets:
            t0 = bounds[m].test[0]
            candles.setdefault(m, []).append(mine[m].iloc[t0:])
            signals.setdefault(m, []).append(fcs[m].forecast_frame(mine[m], t0).iloc[t0:])
            rows.append({"fold": fold.index, "symbol": m, "train_start": str(split.train_start),
                         "test_start": str(split.test_start),
                         "test_bars": len(mine[m]) - t0,
                         "models_traded": " ".join(market_models(fcs[m])["models_traded"]),
                         **{f"route_{k}": v["route"] for k, v in skill_summary(fcs[m]).items()
                            if isinstance(v, dict)}})
    test = {m: pd.concat(parts) for m, parts in candles.items()}
    sig = {m: pd.concat(parts) for m, parts in signals.items()}
    from bt_lstm.backtest.portfolio import run_portfolio_backtest

    result = run_portfolio_backtest(test, sig, strategy_cls, cfg.strategy,
                                    allocation=allocation, bar=aligned.bar)
    from bt_lstm.backtest.portfolio_metrics import score_portfolio
    from bt_lstm.backtest.reports.portfolio import write_portfolio_report

    figures, daily = score_portfolio(test, result, cfg,
                                     luck=lambda s, b: luck_figures(s, b, cfg))
    table = pd.DataFrame(rows)
    metrics = {"dataset": aligned.name, "timeframe": timeframe, "library_version": __version__,
               "panel": panel, "allocation": allocation,
               "walk_forward": dict(spec.to_dict(), folds=len(folds)),
               "portfolio": dict(figures["portfolio"],
                                 folds=fold_returns(result.equity, folds, timeline,
                                                    cfg.strategy.cash)),
               "markets": {m: dict(figures["markets"][m], data=aligned.reports[m].to_dict(),
                                   joined_fold=int(table[table.symbol == m].fold.min()))
                           for m in test}}
    with staged_folder(run_dir / "stitched") as staged:
        atomic_write_text(staged / "folds.csv", table.to_csv(index=False))
        atomic_write_json(staged / "config.json", {"pipeline": cfg.to_dict(),
                                                   "walk_forward": spec.to_dict()})
        write_portfolio_report(staged, clean_json(metrics), result, daily,
                               f"bt-lstm walk-forward: {aligned.name} (out of sample, after "
                               f"costs)", tearsheet=tearsheet)
        write_manifest(staged, job="walk_forward_portfolio", run_id=run_dir.name,
                       dataset=aligned.name, timeframe=timeframe,
                       data_fingerprint={m: fingerprint_frame(f)
                                         for m, f in aligned.frames.items()},
                       seeds={"train": cfg.train.seed, "regimes": cfg.train.seed,
                              "bootstrap": cfg.train.seed})
    if run_dir.parent.resolve() != Path(reports_root).resolve():
        mark_latest(run_dir)
    files = [*written_files(run_dir / "stitched"), write_index(reports_root)]
    return PortfolioWalkForward(run_dir, metrics, table, result, files)


def fold_returns(equity: pd.Series, folds: list[Fold], timeline: pd.DatetimeIndex,
                 cash: float) -> list[dict[str, Any]]:
    """The portfolio's return over each fold's test span, from the book's value."""
    out = []
    for fold in folds:
        start = timeline[fold.test[0]]
        end = timeline[fold.test[1]] if fold.test[1] < len(timeline) else None
        before = equity[equity.index < start]
        inside = equity[(equity.index >= start) & ((equity.index < end) if end else True)]
        if not len(inside):
            continue
        first = float(before.iloc[-1]) if len(before) else cash
        out.append({"fold": fold.index, "test_start": str(start),
                    "return": float(inside.iloc[-1] / first - 1.0)})
    return out
