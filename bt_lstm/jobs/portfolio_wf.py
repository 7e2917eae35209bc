"""Walk-forward over several markets: calendar folds (the same dates for every market), panel
models per fold, each fold's test span traded and reported as a portfolio, and every market's
test spans stitched and traded as one portfolio.

The run folder: ``config.json`` and ``manifest.json`` (written first; ``--resume`` reads them),
``folds/fold_<i>/<market>/`` (each fold's bundles, saved whole as soon as the fold is fitted),
``fold_reports/fold_<i>/`` (that fold's portfolio report) and ``stitched/`` (the out-of-sample
run's report, with ``forecasts.csv``: every market's stitched forecasts beside the realised
target, one row per market and bar). A market joins at the first fold in which it has enough
training bars and never skips a fold afterwards (a held position would ride through an
untraded span).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from bt_lstm import __version__
from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import fingerprint_frame
from bt_lstm.data.files import atomic_write_json, atomic_write_text, clean_json, staged_folder
from bt_lstm.data.panel import Panel, align_markets
from bt_lstm.jobs.backtest import luck_figures, skill_summary
from bt_lstm.jobs.portfolio import market_models
from bt_lstm.jobs.portfolio_folds import PanelFold, fit_panel_folds, plan_panel_folds
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import claim_run_dir, mark_latest, write_index, written_files
from bt_lstm.models.forecast import Forecaster
from bt_lstm.models.skill import FLAT
from bt_lstm.research.panel import PANEL_MODES, panel_bounds
from bt_lstm.research.pipeline import ProgressFactory, feature_key, target_of
from bt_lstm.research.walkforward import Fold, WalkForwardSpec, make_folds

logger = logging.getLogger(__name__)
JOB = "walk_forward_portfolio"


@dataclass
class PortfolioWalkForward:
    """The stitched portfolio run: its folder, figures, fold table, backtest, and per market its
    stitched out-of-sample forecasts (``regime``, ``model``, ``forecast``, ``realised``)."""

    run_dir: Path
    metrics: dict[str, Any]
    folds: pd.DataFrame
    backtest: Any
    files: list[Path]
    forecasts: dict[str, pd.DataFrame]


@dataclass(frozen=True)
class PanelRunSpec:
    """How a panel walk-forward trades and where its run goes (saved in its config.json)."""

    panel: str = "pooled"
    allocation: str = "equal"
    timeframe: str | None = None
    source: Mapping[str, Any] | None = None  # the data flags, for --resume


def feature_inputs(aligned: Panel, cfg: PipelineConfig) -> dict[str, Any]:
    """Per market, what its features read beside its OHLCV (``research.pipeline.feature_key``:
    plugin files' sha256, flow / cross columns); {} with none (price, calendar, htf only)."""
    out = {m: feature_key(f, cfg) for m, f in aligned.frames.items()}
    return out if any(out.values()) else {}


def start_panel_run(run_dir: Path, aligned: Panel, cfg: PipelineConfig, spec: WalkForwardSpec,
                    run: PanelRunSpec, resume: bool, force: bool) -> None:
    """Create the run folder with its config.json and manifest.json, or check them on resume.

    Raises
    ------
    ValueError
        A new run whose folder exists (without ``force``), a resumed run with no manifest, or
        one whose markets' data changed since it started.
    """
    fingerprint = {m: fingerprint_frame(f) for m, f in aligned.frames.items()}
    inputs = feature_inputs(aligned, cfg)
    manifest = run_dir / "manifest.json"
    if resume:
        if not manifest.is_file():
            raise ValueError(f"{run_dir}: no walk-forward run to resume (manifest.json missing)")
        saved = json.loads(manifest.read_text())
        if saved.get("data_fingerprint") != fingerprint:
            raise ValueError(f"{run_dir}: the data changed since this run started (fingerprint "
                             f"differs); start a new run instead of --resume")
        if saved.get("feature_inputs", {}) != inputs:
            raise ValueError(f"{run_dir}: what the feature groups read changed since this run "
                             f"started (a cross market's candles, flow columns or a plugin "
                             f"file); start a new run instead of --resume")
        return
    claim_run_dir(run_dir, force)
    atomic_write_json(run_dir / "config.json", clean_json({
        "pipeline": cfg.to_dict(), "walk_forward": spec.to_dict(),
        "source": dict(run.source or {}),
        "markets": {"symbols": aligned.symbols, "panel": run.panel,
                    "allocation": run.allocation}}))
    write_manifest(run_dir, job=JOB, run_id=run_dir.name, dataset=aligned.name,
                   timeframe=run.timeframe, data_fingerprint=fingerprint,
                   **({"feature_inputs": inputs} if inputs else {}),
                   bars={m: len(f) for m, f in aligned.frames.items()},
                   seeds={"train": cfg.train.seed, "regimes": cfg.train.seed,
                          "bootstrap": cfg.train.seed})


def run_portfolio_walk_forward(frames: Mapping[str, pd.DataFrame], cfg: PipelineConfig,
                               spec: WalkForwardSpec, strategy_cls: type, run_dir: Path,
                               reports_root: Path, panel: str = "pooled",
                               allocation: str = "equal", timeframe: str | None = None,
                               progress_factory: ProgressFactory | None = None,
                               tearsheet: bool = True, jobs: int = 1,
                               scheduler: str | None = None, resume: bool = False,
                               force: bool = False,
                               source: Mapping[str, Any] | None = None) -> PortfolioWalkForward:
    """Plan calendar folds on the markets' common timeline, fit (or reuse) each fold's panel
    models, report every fold's test span as a portfolio and backtest the stitched spans.

    Notes
    -----
    Every fold is cut by date, the same for all markets, with the purge gap of the plan
    (``make_folds`` on the common timeline); each market's bars follow from the dates. Fold
    bundles are saved whole as each fold finishes, so ``resume`` fits only the missing folds.
    """
    if panel not in PANEL_MODES:
        raise ValueError(f"--panel {panel!r}: use one of {', '.join(PANEL_MODES)}")
    aligned = align_markets(frames)
    timeline = aligned.timeline()
    folds = make_folds(len(timeline), spec, cfg)
    plans = plan_panel_folds(aligned.frames, timeline, folds, cfg, run_dir / "folds")
    run = PanelRunSpec(panel, allocation, timeframe, source)
    start_panel_run(run_dir, aligned, cfg, spec, run, resume, force)
    if not resume and run_dir.parent.resolve() != Path(reports_root).resolve():
        mark_latest(run_dir)
    fitted = fit_panel_folds(plans, cfg, panel, jobs, scheduler, progress_factory)
    candles: dict[str, list[pd.DataFrame]] = {}
    signals: dict[str, list[pd.DataFrame]] = {}
    rows = []
    for p in plans:
        fcs = fitted[p.index]
        bounds = panel_bounds(p.frames, p.split, cfg)
        mine_c, mine_s = {}, {}
        for m, frame in p.frames.items():
            t0 = bounds[m].test[0]
            mine_c[m] = frame.iloc[t0:]
            mine_s[m] = fcs[m].forecast_frame(frame, t0).iloc[t0:]
            candles.setdefault(m, []).append(mine_c[m])
            signals.setdefault(m, []).append(mine_s[m])
            rows.append(_fold_row(p, m, mine_c[m], fcs[m]))
        write_fold_report(run_dir / "fold_reports" / f"fold_{p.index:03d}", p, mine_c, mine_s,
                          fcs, cfg, strategy_cls, run, aligned, tearsheet)
    table = pd.DataFrame(rows)
    test = {m: pd.concat(parts) for m, parts in candles.items()}
    sig = {m: pd.concat(parts) for m, parts in signals.items()}
    metrics, result, forecasts = _stitched(test, sig, cfg, strategy_cls, run, aligned, spec,
                                           folds, timeline, table, fitted, run_dir, tearsheet)
    files = [*written_files(run_dir / "stitched"), write_index(reports_root)]
    return PortfolioWalkForward(run_dir, metrics, table, result, files, forecasts)


def stitched_forecasts(signals: Mapping[str, pd.DataFrame], aligned: Panel,
                       cfg: PipelineConfig) -> dict[str, pd.DataFrame]:
    """Per market, its stitched test-span forecasts with the realised target beside them (the
    market's own ``target_of``, as the one-market walk-forward scores them)."""
    out = {}
    for m, sig in signals.items():
        realised = target_of(aligned.frames[m], cfg)
        out[m] = sig.assign(realised=realised.reindex(sig.index))
        out[m].index.name = "timestamp"
    return out


def _fold_row(p: PanelFold, m: str, candles: pd.DataFrame, fc: Forecaster) -> dict[str, Any]:
    return {"fold": p.index, "symbol": m, "train_start": str(p.split.train_start),
            "test_start": str(p.split.test_start), "test_bars": len(candles),
            "models_traded": " ".join(market_models(fc)["models_traded"]),
            **{f"route_{k}": v["route"] for k, v in skill_summary(fc).items()
               if isinstance(v, dict)}}


def _trade(candles: Mapping[str, pd.DataFrame], signals: Mapping[str, pd.DataFrame],
           cfg: PipelineConfig, strategy_cls: type, allocation: str, bar: pd.Timedelta
           ) -> tuple[Any, dict[str, Any], dict[str, pd.Series]]:
    """One portfolio backtest of ``candles`` with ``signals``, scored (the backtest's own
    figures: the book beside the basket, each market beside its buy-and-hold, luck)."""
    from bt_lstm.backtest.portfolio import run_portfolio_backtest
    from bt_lstm.backtest.portfolio_metrics import score_portfolio

    result = run_portfolio_backtest(candles, signals, strategy_cls, cfg.strategy,
                                    allocation=allocation, bar=bar)
    figures, daily = score_portfolio(candles, result, cfg,
                                     luck=lambda s, b: luck_figures(s, b, cfg))
    return result, figures, daily


def write_fold_report(folder: Path, p: PanelFold, candles: Mapping[str, pd.DataFrame],
                      signals: Mapping[str, pd.DataFrame], fcs: Mapping[str, Forecaster],
                      cfg: PipelineConfig, strategy_cls: type, run: PanelRunSpec,
                      aligned: Panel, tearsheet: bool) -> None:
    """One fold's test span traded alone (the starting cash, flat at its start) and written as
    the portfolio backtest writes its run (``write_portfolio_report``), into ``folder``."""
    from bt_lstm.backtest.reports.portfolio import write_portfolio_report

    result, figures, daily = _trade(candles, signals, cfg, strategy_cls, run.allocation,
                                    aligned.bar)
    markets = {m: dict(figures["markets"][m], skill=skill_summary(fc), **market_models(fc),
                       test={"start": str(candles[m].index[0]),
                             "end": str(candles[m].index[-1]), "bars": len(candles[m])})
               for m, fc in fcs.items()}
    port = dict(figures["portfolio"], skill={m: x["models_traded"] for m, x in markets.items()},
                models_traded=sum(len(x["models_traded"]) for x in markets.values()))
    metrics = {"dataset": aligned.name, "timeframe": run.timeframe,
               "library_version": __version__, "panel": run.panel,
               "allocation": run.allocation, "fold": p.index, "split": p.split.to_dict(),
               "portfolio": port, "markets": markets}
    with staged_folder(folder) as staged:
        write_portfolio_report(staged, clean_json(metrics), result, daily,
                               f"bt-lstm walk-forward fold {p.index}: {aligned.name} (out of "
                               f"sample, after costs)", tearsheet=tearsheet)


def _stitched(test: Mapping[str, pd.DataFrame], sig: Mapping[str, pd.DataFrame],
              cfg: PipelineConfig, strategy_cls: type, run: PanelRunSpec, aligned: Panel,
              spec: WalkForwardSpec, folds: list[Fold], timeline: pd.DatetimeIndex,
              table: pd.DataFrame, fitted: Mapping[int, Mapping[str, Forecaster]],
              run_dir: Path, tearsheet: bool
              ) -> tuple[dict[str, Any], Any, dict[str, pd.DataFrame]]:
    """The stitched out-of-sample portfolio, scored and written to ``run_dir/stitched``; its
    metrics, backtest and each market's forecasts beside the realised target."""
    from bt_lstm.backtest.reports.portfolio import write_portfolio_report

    result, figures, daily = _trade(test, sig, cfg, strategy_cls, run.allocation, aligned.bar)
    skill = fold_skill(fitted)
    metrics = {"dataset": aligned.name, "timeframe": run.timeframe, "run_id": run_dir.name,
               "library_version": __version__, "panel": run.panel,
               "allocation": run.allocation,
               "walk_forward": dict(spec.to_dict(), folds=len(folds)),
               "portfolio": dict(figures["portfolio"], skill=skill,
                                 folds=fold_returns(result.equity, folds, timeline,
                                                    cfg.strategy.cash)),
               "markets": {m: dict(figures["markets"][m], data=aligned.reports[m].to_dict(),
                                   skill=skill[m],
                                   joined_fold=int(table[table.symbol == m].fold.min()))
                           for m in test}}
    forecasts = stitched_forecasts(sig, aligned, cfg)
    with staged_folder(run_dir / "stitched") as staged:
        atomic_write_text(staged / "folds.csv", table.to_csv(index=False))
        atomic_write_text(staged / "forecasts.csv", pd.concat(
            [f.assign(symbol=m) for m, f in forecasts.items()]).to_csv())
        atomic_write_json(staged / "config.json", {"pipeline": cfg.to_dict(),
                                                   "walk_forward": spec.to_dict()})
        write_portfolio_report(staged, clean_json(metrics), result, daily,
                               f"bt-lstm walk-forward: {aligned.name} (out of sample, after "
                               f"costs)", tearsheet=tearsheet)
        write_manifest(staged, job=JOB, run_id=run_dir.name, dataset=aligned.name,
                       timeframe=run.timeframe,
                       data_fingerprint={m: fingerprint_frame(f)
                                         for m, f in aligned.frames.items()},
                       seeds={"train": cfg.train.seed, "regimes": cfg.train.seed,
                              "bootstrap": cfg.train.seed})
    return metrics, result, forecasts


def fold_skill(fitted: Mapping[int, Mapping[str, Forecaster]]) -> dict[str, dict[str, int]]:
    """Per market: its fold x regime models, how many showed validated skill, how many traded."""
    out: dict[str, dict[str, int]] = {}
    for fcs in fitted.values():
        for m, fc in fcs.items():
            row = out.setdefault(m, {"fold_regime_models": 0, "with_skill": 0, "traded": 0})
            summary = skill_summary(fc)
            for v in summary.values():
                if isinstance(v, dict):
                    row["fold_regime_models"] += 1
                    row["with_skill"] += v["verdict"] == "skill"
                    row["traded"] += v["route"] != FLAT
    return out


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
