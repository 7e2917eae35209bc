"""The walk-forward job: fit every fold, one stitched out-of-sample backtest, the run folder.

Everything it reports comes from test bars forecast by models that never saw them.
"""
from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from bt_lstm import __version__
from bt_lstm.backtest.engine import BacktestResult, run_backtest
from bt_lstm.backtest.metrics import buy_and_hold_equity, score_backtest
from bt_lstm.backtest.reports import (
    luck_html,
    summary_html,
    write_overview_png,
    write_tearsheet,
)
from bt_lstm.config import PipelineConfig, replace
from bt_lstm.data.candles import find_gaps, fingerprint_frame, infer_bar
from bt_lstm.data.files import atomic_write_json, atomic_write_text, clean_json
from bt_lstm.jobs.backtest import luck_figures, seed_figures, write_backtest_files
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import claim_run_dir, mark_latest, write_index
from bt_lstm.models.forecast import Forecaster
from bt_lstm.models.skill import FLAT, skill_verdict
from bt_lstm.research.pipeline import target_of
from bt_lstm.research.scoring import forecast_scores
from bt_lstm.research.seeds import ENSEMBLES, ensemble_forecasts, seed_configs, seed_spread
from bt_lstm.research.walkforward import (
    Fold,
    TaskProgress,
    WalkForwardSpec,
    fit_folds_seeds,
    make_folds,
    stitch_forecasts,
)
from bt_lstm.signals.regimes import REGIME_LABELS

logger = logging.getLogger(__name__)

@dataclass
class WalkForwardResult:
    """What ``run_walk_forward`` returns: the run folder, the folds, every test bar's forecast,
    the per-fold table, the metrics and the stitched out-of-sample backtest."""
    run_dir: Path
    folds: list[Fold]
    forecasts: pd.DataFrame
    fold_table: pd.DataFrame
    metrics: dict[str, Any]
    backtest: BacktestResult


@dataclass(frozen=True)
class SavedRun:
    """What ``--resume`` takes from an interrupted run's config.json: everything it started
    with (config, fold plan, data source, seeds, nested tuning)."""

    run_dir: Path
    cfg: PipelineConfig
    spec: WalkForwardSpec
    source: dict[str, Any]
    seeds: int
    ensemble: str
    tune_trials: int
    tune_space: Any
    markets: dict[str, Any] | None = None  # several markets: {"panel", "allocation", "symbols"}


def load_saved_run(run_dir: Path) -> SavedRun:
    """The settings of the run in ``run_dir``, to finish it exactly as it started.

    Raises
    ------
    ValueError
        No run there (config.json missing).
    """
    from bt_lstm.jobs.runs import resolve_run

    run_dir = resolve_run(Path(run_dir))  # a run folder, or a group's newest run
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"--resume {Path(run_dir).name}: no run at {run_dir} (config.json "
                         f"missing)")
    saved = json.loads(path.read_text())
    seeds = saved.get("seeds", {"n": 1, "ensemble": "none"})
    tuning = saved.get("tuning", {"trials": 0, "space": None})  # runs before tuning: none
    return SavedRun(Path(run_dir), PipelineConfig.from_dict(saved["pipeline"]),
                    WalkForwardSpec(**saved["walk_forward"]), dict(saved["source"]),
                    seeds["n"], seeds["ensemble"], tuning["trials"], tuning["space"],
                    saved.get("markets"))


def start_run(run_dir: Path, frame: pd.DataFrame, cfg: PipelineConfig, spec: WalkForwardSpec,
              source: dict[str, Any], resume: bool, force: bool = False,
              seeds: int = 1, ensemble: str = "none",
              tuning: dict[str, Any] | None = None) -> None:
    """Create the run folder with its config and manifest, or check them when resuming.

    ``tuning`` (``{"trials": N, "space": {...}}`` of ``--tune-trials``) is saved in config.json,
    so ``--resume`` tunes the remaining folds exactly as the first folds were tuned.

    Raises
    ------
    ValueError
        A new run whose folder exists (never overwritten), or a resumed run whose data differ
        from the data it started on.
    """
    fingerprint = fingerprint_frame(frame)
    manifest_path = run_dir / "manifest.json"
    if resume:
        if not manifest_path.is_file():
            raise ValueError(f"{run_dir}: no walk-forward run to resume (manifest.json missing)")
        saved = json.loads(manifest_path.read_text())
        if saved.get("data_fingerprint") != fingerprint:
            raise ValueError(f"{run_dir}: the data changed since this run started (fingerprint "
                             f"differs); start a new run instead of --resume")
        return
    claim_run_dir(run_dir, force)
    atomic_write_json(run_dir / "config.json", {"pipeline": cfg.to_dict(),
                                                "walk_forward": spec.to_dict(),
                                                "source": source,
                                                "seeds": {"n": seeds, "ensemble": ensemble},
                                                "tuning": tuning or {"trials": 0, "space": None}})
    train_seeds = [c.train.seed for c in seed_configs(cfg, seeds)] if seeds > 1 else cfg.train.seed
    write_manifest(run_dir, job="walk_forward", run_id=run_dir.name,
                   data_fingerprint=fingerprint, bars=len(frame),
                   first_bar=str(frame.index[0]), last_bar=str(frame.index[-1]), source=source,
                   seeds={"train": train_seeds, "regimes": cfg.train.seed,
                          "bootstrap": cfg.train.seed, "ensemble": ensemble})


def fold_table(folds: list[Fold], frame: pd.DataFrame, forecasts: pd.DataFrame,
               windows: dict[int, dict[int, int]], equity: pd.Series,
               forecasters: dict[int, Forecaster]) -> pd.DataFrame:
    """One row per fold: dates, training windows per regime, each regime's skill verdict and
    route, test-span scores beside zero."""
    rows = []
    for fold in folds:
        part = forecasts[forecasts["fold"] == fold.index]
        idx = frame.index
        row: dict[str, Any] = {
            "fold": fold.index, "train_start": idx[fold.train[0]],
            "train_end": idx[fold.train[1] - 1], "test_start": idx[fold.test[0]],
            "test_end": idx[fold.test[1] - 1], "test_bars": fold.test[1] - fold.test[0]}
        for r in range(3):
            row[f"windows_{REGIME_LABELS[r]}"] = windows.get(fold.index, {}).get(r, 0)
        row.update(_fold_skill(forecasters[fold.index]))
        eq = equity.reindex(part.index)
        before = equity[equity.index < part.index[0]]
        start_value = before.iloc[-1] if len(before) else None
        row["strategy_return"] = (float(eq.iloc[-1] / start_value - 1.0)
                                  if start_value else float(eq.iloc[-1] / eq.iloc[0] - 1.0))
        scopes = [(REGIME_LABELS[r], part["regime"] == r) for r in range(3)]
        for name, mask in scopes + [("all", pd.Series(True, index=part.index))]:
            sc = forecast_scores(part.loc[mask, "forecast"], part.loc[mask, "realised"])
            for key in ("n", "mse", "zero_mse", "mae", "zero_mae", "dir_acc"):
                row[f"{name}_{key}"] = sc[key]
        rows.append(row)
    return pd.DataFrame(rows)


def _fold_skill(fc: Forecaster) -> dict[str, Any]:
    """verdict_, val_ratio_, dm_p_ and route_<regime> of one fold's models."""
    routes, row = fc.routes(), {}
    for r in range(3):
        label, name = REGIME_LABELS[r], fc.regime_models.get(r)
        record = fc.skill.get(name, {}) if name else {}
        row[f"verdict_{label}"] = skill_verdict(record, fc.skill_p) if name else ""
        row[f"val_ratio_{label}"] = record.get("ratio", np.nan)
        row[f"dm_p_{label}"] = record.get("dm_p", np.nan)
        row[f"route_{label}"] = routes.get(r, "")
    return row


def skill_counts(table: pd.DataFrame, forecasters: dict[int, Forecaster]) -> dict[str, Any]:
    """How many fold x regime models there were, had skill, and traded."""
    routes = table[[f"route_{REGIME_LABELS[r]}" for r in range(3)]].to_numpy().ravel()
    verdicts = table[[f"verdict_{REGIME_LABELS[r]}" for r in range(3)]].to_numpy().ravel()
    fc = next(iter(forecasters.values()))
    return {"policy": fc.no_skill, "skill_p": fc.skill_p,
            "fold_regime_models": int(np.sum(routes != "")),
            "with_skill": int(np.sum(verdicts == "skill")),
            "traded": int(np.sum((routes != "") & (routes != FLAT)))}


def run_walk_forward(frame: pd.DataFrame, dataset: str, timeframe: str, cfg: PipelineConfig,
                     spec: WalkForwardSpec, strategy_cls: type, run_dir: Path,
                     source: dict[str, Any], jobs: int = 1, scheduler: str | None = None,
                     resume: bool = False, tearsheet: bool = True, force: bool = False,
                     start_progress: Callable[[int, int], TaskProgress] | None = None,
                     seeds: int = 1, ensemble: str = "none", tune_trials: int = 0,
                     tune_space: dict | None = None,
                     reports_root: Path | None = None) -> WalkForwardResult:
    """Plan folds, fit (or reuse) each, forecast its test span, backtest the stitched span.

    Notes
    -----
    The plan is checked before any training. Fold bundles go to ``run_dir/folds`` (with
    ``seeds`` K > 1: ``run_dir/folds_seed<s>`` per seed, each seed's stitched run scored into
    ``metrics["seed_spread"]``; ``ensemble="mean"`` trades the seeds' mean forecast). The final
    files are each written atomically, after every fold is done. ``reports_root`` (default:
    the run folder's parent) gets the index of runs; a run in a group folder below it
    (``wf_<DATASET>_<tf>/<stamp>``) becomes the group's ``latest`` when it starts, so
    ``--resume wf_<DATASET>_<tf>`` finds the newest run.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"--ensemble {ensemble!r}: use one of {', '.join(ENSEMBLES)}")
    folds = make_folds(len(frame), spec, cfg)
    bar = infer_bar(frame.index)
    gaps = find_gaps(frame.index, bar)
    if gaps.n_gaps:
        logger.warning("%s: %s", dataset, gaps.describe())
    cfgs = seed_configs(cfg, seeds)
    start_run(run_dir, frame, cfg, spec, source, resume, force, seeds, ensemble,
              {"trials": tune_trials, "space": tune_space if tune_trials else None})
    root = Path(reports_root) if reports_root is not None else run_dir.parent
    if not resume and run_dir.parent.resolve() != root.resolve():
        mark_latest(run_dir)
    fold_cfgs, tuned = tune_folds(frame, folds, cfg, run_dir / "tune", tune_trials, tune_space)
    dirs = ([run_dir / "folds"] if seeds == 1
            else [run_dir / f"folds_seed{c.train.seed}" for c in cfgs])
    fitted = fit_folds_seeds(frame, folds, cfgs, dirs, jobs, scheduler, start_progress,
                             fold_cfgs)
    per_seed = [stitch_forecasts(frame, folds, fcs) for fcs, _ in fitted]
    forecasters, windows = fitted[0]  # the first seed's folds: the fold table and skill
    signals = ensemble_forecasts(per_seed) if ensemble == "mean" else per_seed[0]
    realised = target_of(frame, cfg)
    forecasts = signals.assign(realised=realised.reindex(signals.index))
    forecasts.index.name = "timestamp"
    test = frame.iloc[folds[0].test[0]:]
    result = run_backtest(test, strategy_cls, cfg.strategy, signals=signals, bar=bar,
                          inference="batch")
    strat_daily, bh_daily, strategy, bh = score_backtest(test, result, cfg)
    table = fold_table(folds, frame, forecasts, windows, result.equity, forecasters)
    overall = forecast_scores(forecasts["forecast"], forecasts["realised"])
    metrics = clean_json({
        "dataset": dataset, "timeframe": timeframe, "run_id": run_dir.name,
        "library_version": __version__,
        "period": {"start": str(test.index[0]), "end": str(test.index[-1]), "bars": len(test),
                   "days": len(strat_daily)},
        "walk_forward": dict(spec.to_dict(), folds=len(folds)),
        "strategy": strategy, "buy_and_hold": bh, "forecast_scores": overall,
        "skill": skill_counts(table, forecasters),
        "costs": {"commission": cfg.strategy.commission, "slippage": cfg.strategy.slippage},
        "regime_bars": {REGIME_LABELS[r]: int((signals["regime"] == r).sum()) for r in range(3)},
        "data_gaps": gaps.describe(),
        "statistics": luck_figures(strat_daily, bh_daily, cfg),
        **({"tuning": tuned} if tuned else {})})
    if seeds > 1:
        runs = [seed_figures(c.train.seed, sig, test, realised, strategy_cls, cfg, bar)
                for c, sig in zip(cfgs, per_seed)]
        metrics["seed_spread"] = clean_json(seed_spread(runs, ensemble))
    _write_outputs(run_dir, frame, test, folds, forecasts, table, metrics, result, strat_daily,
                   bh_daily, cfg, tearsheet)
    write_index(root)
    return WalkForwardResult(run_dir, folds, forecasts, table, metrics, result)


def tune_folds(frame: pd.DataFrame, folds: list[Fold], cfg: PipelineConfig, tune_dir: Path,
               n_trials: int, space: dict | None) -> tuple[dict[int, PipelineConfig], dict]:
    """Nested tuning: a study per fold on the bars before its test span only (its fit part,
    scored on its validation tail), so the stitched out-of-sample result stays honest.

    Notes
    -----
    The tuned network settings are the fold's config; the stitched backtest trades with one
    threshold, the run's own (each fold's validation-chosen threshold is in its study.json).
    A study that already holds ``n_trials`` (a resumed run) runs no new trials.
    """
    if n_trials < 1:
        return {}, {}
    from bt_lstm.jobs.tune import tune_span
    from bt_lstm.research.search_space import load_space

    space = space or load_space(None)
    cfgs: dict[int, PipelineConfig] = {}
    tuned: dict[str, Any] = {"trials_per_fold": n_trials, "folds": {}}
    for fold in folds:
        part = frame.iloc[fold.train[0]:fold.test[0]]  # the fold's test span is never passed
        name = f"fold_{fold.index:03d}"
        best, summary = tune_span(part, fold.bounds(), cfg, space, tune_dir / name, study=name,
                                  n_trials=n_trials, charts=False)
        if best is None:
            logger.warning("fold %d: no tuning trial completed; it keeps the run's config",
                           fold.index)
            continue
        cfgs[fold.index] = replace(best, strategy=cfg.strategy)
        tuned["folds"][name] = {"params": summary["best"]["params"],
                                "val_mse_ratio": summary["best"]["value"],
                                "val_threshold": summary["best"]["threshold"],
                                "n_trials": summary["n_trials"]}
    return cfgs, tuned


def _write_outputs(run_dir: Path, frame: pd.DataFrame, test: pd.DataFrame, folds: list[Fold],
                   forecasts: pd.DataFrame, table: pd.DataFrame, metrics: dict[str, Any],
                   result: BacktestResult, strat_daily: pd.Series, bh_daily: pd.Series,
                   cfg: PipelineConfig, tearsheet: bool) -> None:
    atomic_write_text(run_dir / "forecasts.csv", forecasts.to_csv())
    atomic_write_text(run_dir / "folds.csv", table.to_csv(index=False))
    write_backtest_files(run_dir, result, strat_daily, bh_daily)
    title = f"bt-lstm walk-forward: {metrics['dataset']} (out of sample, after costs)"
    if tearsheet:
        write_tearsheet(run_dir / "tearsheet.html", metrics, strat_daily, bh_daily, title)
    bh_equity = buy_and_hold_equity(test, cfg.strategy.cash, cfg.strategy.commission,
                                    cfg.strategy.slippage)
    write_overview_png(test, forecasts["regime"], [frame.index[f.test[0]] for f in folds],
                       result.equity, bh_equity, run_dir / "overview.png", title)
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_text(run_dir / "index.html", index_html(metrics, table, tearsheet))


FOLD_COLUMNS = ("fold", "train_start", "train_end", "test_start", "test_end", "test_bars",
                "windows_bearish", "windows_sideways", "windows_bullish", "route_bearish",
                "route_sideways", "route_bullish", "strategy_return",
                "all_n", "all_mse", "all_zero_mse", "all_dir_acc")


def index_html(metrics: dict[str, Any], table: pd.DataFrame, tearsheet: bool) -> str:
    """A self-contained summary page: figures, the overview plot, the folds, links."""
    per = metrics["period"]
    links = ["<a href='tearsheet.html'>tearsheet</a>"] if tearsheet else []
    links += [f"<a href='{f}'>{f}</a>" for f in ("metrics.json", "folds.csv", "forecasts.csv",
                                                   "trades.csv", "fills.csv", "config.json",
                                                   "manifest.json")]
    folds = table[list(FOLD_COLUMNS)].to_html(index=False, float_format=lambda v: f"{v:.4g}")
    sc = metrics["forecast_scores"]
    esc = html.escape
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(metrics['run_id'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>Walk-forward: {esc(metrics['dataset'])} {esc(str(metrics['timeframe']))}</h1>
<p>Out of sample only, costs included (commission {metrics['costs']['commission']},
slippage {metrics['costs']['slippage']}): {esc(per['start'])} to {esc(per['end'])},
{per['bars']} bars in {metrics['walk_forward']['folds']} folds
({esc(metrics['walk_forward']['mode'])}, {metrics['walk_forward']['train_bars']} training bars,
{metrics['walk_forward']['test_bars']} test bars). Every bar was traded by models that were
fitted before it.</p>
<p>{' | '.join(links)}</p>
<h2>Strategy vs buy-and-hold</h2>{summary_html(metrics)}
<h2>Skill guard</h2><p>{_skill_sentence(metrics['skill'])}</p>
<h2>How much of it could be luck</h2>{luck_html(metrics)}
<h2>Forecasts</h2><p>{sc['n']} test bars: MSE {_g(sc['mse'])} vs {_g(sc['zero_mse'])} for a
zero forecast (ratio {_g(_ratio(sc['mse'], sc['zero_mse']))}, below 1 beats it); directional
accuracy {_g(100 * sc['dir_acc'] if sc['dir_acc'] is not None else None)} %.</p>
<img src="overview.png" alt="price by regime with fold boundaries; equity vs buy-and-hold">
<h2>Folds</h2>{folds}
</body></html>
"""


def _skill_sentence(sk: dict[str, Any]) -> str:
    return (f"{sk['traded']} of {sk['fold_regime_models']} fold × regime models traded; "
            f"{sk['with_skill']} showed validated skill (validation MSE below the zero "
            f"forecast's, one-sided Diebold–Mariano p ≤ {sk['skill_p']:g}). The others: "
            f"--no-skill {html.escape(sk['policy'])}.")


def _g(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def format_fold_table(table: pd.DataFrame) -> str:
    """The folds as a plain-text table for the terminal."""
    lines = [f"{'fold':>4}  {'test start':<19}  {'test end':<19}  {'bars':>5}  {'return':>8}  "
             f"{'MSE/zero':>8}  {'dir acc':>7}  {'traded':>6}"]
    for _, r in table.iterrows():
        ratio = r["all_mse"] / r["all_zero_mse"] if r["all_zero_mse"] else np.nan
        lines.append(f"{int(r['fold']):>4}  {str(r['test_start']):<19}  {str(r['test_end']):<19}"
                     f"  {int(r['test_bars']):>5}  {100 * r['strategy_return']:>7.2f}%  "
                     f"{ratio:>8.3f}  {100 * r['all_dir_acc']:>6.1f}%  {_traded(r):>6}")
    lines.append("traded: one letter per regime (bearish, sideways, bullish): its model traded "
                 "(B/S/U) or the skill guard kept it flat (.)")
    return "\n".join(lines)


def _traded(row: pd.Series) -> str:
    marks = []
    for r, letter in zip(range(3), "BSU"):
        route = row.get(f"route_{REGIME_LABELS[r]}", "")
        marks.append(letter if route and route != FLAT else ".")
    return "".join(marks)
