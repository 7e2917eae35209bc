"""The main job: fit (or reuse) regime models, backtest the test period, write the report folder."""
from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm import __version__
from bt_lstm.backtest.engine import BacktestResult, run_backtest
from bt_lstm.backtest.metrics import PERIODS_PER_YEAR, score_backtest
from bt_lstm.backtest.reports import format_summary, write_tearsheet
from bt_lstm.backtest.reports.tearsheet import Diagnostics
from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import find_gaps, fingerprint_frame, infer_bar
from bt_lstm.data.files import (
    atomic_write_json,
    atomic_write_text,
    clean_json,
    replace_dir,
    staged_folder,
    staging_dir,
)
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import finish_run, new_run_dir, run_id
from bt_lstm.models.artifacts import ArtifactError, read_manifest
from bt_lstm.models.forecast import Forecaster, load_forecaster
from bt_lstm.models.skill import FLAT, describe_route, skill_verdict
from bt_lstm.research.pipeline import FitResult, ProgressFactory, check_enough_bars, target_of
from bt_lstm.research.scoring import forecast_scores
from bt_lstm.research.seeds import (
    ENSEMBLES,
    ensemble_forecasts,
    fit_seeds,
    seed_configs,
    seed_spread,
)
from bt_lstm.research.stats import luck_statistics
from bt_lstm.signals.regimes import REGIME_LABELS
from bt_lstm.signals.windows import SplitBounds, split_bounds

logger = logging.getLogger(__name__)


@dataclass
class JobResult:
    """The main job's figures, its run folder (``reports/backtest_<DATASET>_<tf>/<stamp>``) and
    every file written there."""

    metrics: dict[str, Any]
    report_dir: Path
    model_dir: Path
    reused_models: bool
    backtest: BacktestResult
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """The terminal table: strategy beside buy-and-hold over the test span."""
        return format_summary(self.metrics)

    @property
    def no_trades(self) -> str | None:
        """One line saying why nothing traded (None when something did)."""
        return self.metrics.get("no_trades")


def model_key(frame: pd.DataFrame, cfg: PipelineConfig) -> str:
    """Cache key: the data fingerprint, the training config and the library version."""
    from bt_lstm.research.pipeline import feature_key, model_file_meta

    blob = json.dumps({"data": fingerprint_frame(frame), "config": cfg.training_dict(),
                       "version": __version__, **model_file_meta(cfg),
                       **feature_key(frame, cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def obtain_forecaster(frame: pd.DataFrame, cfg: PipelineConfig, model_dir: Path, retrain: bool,
                      progress_factory: ProgressFactory | None = None) -> tuple[Forecaster, bool]:
    """Load the saved bundle for this data and config, or fit and save one atomically.

    The forecaster carries the config's no-skill policy (``cfg.strategy.no_skill``).
    """
    fcs, reused = obtain_forecasters(frame, [cfg], [model_dir], retrain, 1, progress_factory)
    return fcs[0], reused[0]


def _load_cached(frame: pd.DataFrame, cfg: PipelineConfig, model_dir: Path) -> Forecaster | None:
    manifest = read_manifest(model_dir)
    if manifest is not None and manifest.get("model_key") == model_key(frame, cfg):
        try:
            logger.info("reusing saved models in %s (--retrain to train again)", model_dir)
            return load_forecaster(model_dir, cfg.strategy.no_skill, cfg.strategy.skill_p)
        except ArtifactError as exc:
            logger.warning("saved models unusable (%s); training again", exc)
    return None


def _save_fit(frame: pd.DataFrame, cfg: PipelineConfig, fit: FitResult, bounds: SplitBounds,
              model_dir: Path) -> Forecaster:
    fc = fit.forecaster
    fc.info = {"model_key": model_key(frame, cfg), "data_fingerprint": fingerprint_frame(frame),
               "config": cfg.training_dict(), "library_version": __version__,
               "train_period": [str(frame.index[0]), str(frame.index[bounds.train[1] - 1])],
               "fallbacks": {REGIME_LABELS[r]: why for r, why in fit.fallbacks.items()}}
    fingerprint = fc.info["data_fingerprint"]
    meta = {name: dict(m, data_fingerprint=fingerprint) for name, m in fit.model_meta.items()}
    staged = staging_dir(model_dir)
    fc.save(staged, meta)
    replace_dir(staged, model_dir)
    return fc


def obtain_forecasters(frame: pd.DataFrame, cfgs: list[PipelineConfig], model_dirs: list[Path],
                       retrain: bool, jobs: int = 1,
                       progress_factory: ProgressFactory | None = None
                       ) -> tuple[list[Forecaster], list[bool]]:
    """One forecaster per config (one per seed): saved bundles are reused, the rest are fitted
    (in ``jobs`` processes) and each saved atomically to its own folder."""
    found = [None if retrain else _load_cached(frame, c, d) for c, d in zip(cfgs, model_dirs)]
    missing = [i for i, fc in enumerate(found) if fc is None]
    fits = fit_seeds(frame, [cfgs[i] for i in missing], jobs, progress_factory)
    for i, (fit, bounds) in zip(missing, fits):
        found[i] = _save_fit(frame, cfgs[i], fit, bounds, model_dirs[i])
    return found, [i not in missing for i in range(len(cfgs))]  # type: ignore[return-value]


def seed_model_dirs(model_dir: Path, seeds: list[int]) -> list[Path]:
    """One seed keeps ``model_dir``; K seeds keep ``<model_dir>_seed<s>`` each."""
    if len(seeds) == 1:
        return [model_dir]
    return [model_dir.with_name(f"{model_dir.name}_seed{s}") for s in seeds]


def run_main_job(frame: pd.DataFrame, dataset: str, cfg: PipelineConfig, strategy_cls: type,
                 model_dir: Path, report_dir: Path, retrain: bool = False,
                 inference: str = "batch", timeframe: str | None = None,
                 progress_factory: ProgressFactory | None = None,
                 tearsheet: bool = True, seeds: int = 1, ensemble: str = "none",
                 jobs: int = 1) -> JobResult:
    """Fit or reuse models, backtest the out-of-sample test part, write the report folder.

    Parameters
    ----------
    seeds
        Train every model with seeds ``seed .. seed + seeds - 1`` (``jobs`` in parallel); each
        seed's test-part figures go to ``metrics["seed_spread"]``.
    ensemble
        ``none``: the first seed's models trade; ``mean``: the mean forecast of all seeds'.

    Notes
    -----
    Only the test part (after the training and validation parts and their purge gaps) is
    traded and reported. The report folder is written beside its final place and moved in
    whole, so a failed run never leaves a half-written report where a good one stood.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"--ensemble {ensemble!r}: use one of {', '.join(ENSEMBLES)}")
    if ensemble == "mean" and inference != "batch":
        raise ValueError("--ensemble mean trades precomputed forecasts: use --inference batch")
    bar = infer_bar(frame.index)
    check_enough_bars(len(frame), cfg, dataset, bar)
    gaps = find_gaps(frame.index, bar)
    if gaps.n_gaps:
        logger.warning("%s: %s", dataset, gaps.describe())
    cfgs = seed_configs(cfg, seeds)
    seed_list = [c.train.seed for c in cfgs]
    dirs = seed_model_dirs(model_dir, seed_list)
    forecasters, reused_each = obtain_forecasters(frame, cfgs, dirs, retrain, jobs,
                                                  progress_factory)
    forecaster, reused = forecasters[0], all(reused_each)
    bounds = split_bounds(len(frame), cfg.windows)
    test = frame.iloc[bounds.test[0]:]
    per_seed = [fc.forecast_frame(frame).iloc[bounds.test[0]:] for fc in forecasters]
    if inference == "per_bar":
        result = run_backtest(test, strategy_cls, cfg.strategy, bar=bar, forecaster=forecaster,
                              inference="per_bar", history=frame.iloc[:bounds.test[0]])
    else:
        signals = ensemble_forecasts(per_seed) if ensemble == "mean" else per_seed[0]
        result = run_backtest(test, strategy_cls, cfg.strategy, signals=signals, bar=bar,
                              forecaster=forecaster, inference="batch")
    strat_daily, bh_daily, strategy, bh = score_backtest(test, result, cfg)
    metrics = _metrics(dataset, timeframe, test, result, strategy, bh, len(strat_daily),
                       forecaster, reused, model_dir, gaps.describe(), cfg)
    metrics["statistics"] = luck_figures(strat_daily, bh_daily, cfg)
    if seeds > 1:
        realised = target_of(frame, cfg)
        runs = [seed_figures(s, sig, test, realised, strategy_cls, cfg, bar)
                for s, sig in zip(seed_list, per_seed)]
        metrics["seed_spread"] = clean_json(seed_spread(runs, ensemble))
        metrics["models"]["dirs"] = [str(d) for d in dirs]
    diag = trading_diagnostics(frame, test, result, forecaster, model_dir, cfg)
    metrics["forecasts"] = forecast_summary(diag)
    metrics["no_trades"] = no_trade_reason(metrics)
    run_dir = new_run_dir(report_dir)
    run = {"job": "backtest", "run_id": run_id(run_dir, report_dir.parent), "dataset": dataset,
           "timeframe": timeframe,
           "data_fingerprint": fingerprint_frame(frame), "bars": len(frame),
           "first_bar": str(frame.index[0]), "last_bar": str(frame.index[-1]),
           "seeds": {"train": seed_list if seeds > 1 else cfg.train.seed,
                     "regimes": cfg.train.seed, "bootstrap": cfg.train.seed,
                     "ensemble": ensemble},
           "models": {"dir": str(model_dir), "model_key": forecaster.info.get("model_key")}}
    _write_report(run_dir, metrics, cfg, result, strat_daily, bh_daily,
                  diag if tearsheet else None, run)
    files = finish_run(run_dir, report_dir.parent)
    return JobResult(metrics, run_dir, model_dir, reused, result, files)


def luck_figures(strat_daily: pd.Series, bh_daily: pd.Series, cfg: PipelineConfig
                 ) -> dict[str, Any]:
    """PSR, DSR (N from the config's provenance) and bootstrap intervals of a daily-return run,
    seeded with the training seed."""
    both = pd.concat([strat_daily.rename("s"), bh_daily.rename("b")], axis=1, join="inner")
    prov = cfg.provenance
    out = luck_statistics(both["s"].to_numpy(), both["b"].to_numpy(), PERIODS_PER_YEAR,
                          prov.n_trials, prov.trials_sharpe_var, cfg.train.seed)
    out["dsr"].update(origin=prov.origin, study=prov.study)
    return clean_json(out)


def seed_figures(seed: int, signals: pd.DataFrame, test: pd.DataFrame, realised: pd.Series,
                 strategy_cls: type, cfg: PipelineConfig, bar: pd.Timedelta) -> dict[str, Any]:
    """One seed's test-part Sharpe, total return and forecast MSE ratio to the zero forecast."""
    result = run_backtest(test, strategy_cls, cfg.strategy, signals=signals, bar=bar,
                          inference="batch")
    _, _, perf, _ = score_backtest(test, result, cfg)
    sc = forecast_scores(signals["forecast"].to_numpy(),
                         realised.reindex(signals.index).to_numpy())
    ratio = sc["mse"] / sc["zero_mse"] if sc["zero_mse"] else float("nan")
    return {"seed": seed, "sharpe": perf["sharpe"], "total_return": perf["total_return"],
            "mse_ratio": ratio, "trades": perf["trades"]}


def _metrics(dataset: str, timeframe: str | None, test: pd.DataFrame, result: BacktestResult,
             strategy: dict[str, Any], bh: dict[str, Any], n_days: int, forecaster: Forecaster,
             reused: bool, model_dir: Path, gaps: str, cfg: PipelineConfig) -> dict[str, Any]:
    regimes = result.bars["regime"].astype(int)
    return {
        "dataset": dataset, "timeframe": timeframe, "library_version": __version__,
        "period": {"start": str(test.index[0]), "end": str(test.index[-1]), "bars": len(test),
                   "days": n_days},
        "strategy": strategy,
        "buy_and_hold": bh,
        "costs": {"commission": cfg.strategy.commission, "slippage": cfg.strategy.slippage},
        "regime_bars": {REGIME_LABELS[r]: int((regimes == r).sum()) for r in range(3)},
        "regime_models": {REGIME_LABELS[r]: n for r, n in forecaster.regime_models.items()},
        "skill": skill_summary(forecaster),
        "models_traded": sum(r != FLAT for r in forecaster.routes().values()),
        "fallbacks": forecaster.info.get("fallbacks", {}),
        "models": {"dir": str(model_dir), "reused": reused,
                   "train_period": forecaster.info.get("train_period")},
        "data_gaps": gaps,
        "machine": {"python": platform.python_version()},
    }


def skill_summary(forecaster: Forecaster) -> dict[str, Any]:
    """Per regime: its model, the model's validation skill record, the verdict at this run's
    ``skill_p``, the route (model or ``flat:no_skill``) and a line for the terminal."""
    routes = forecaster.routes()
    out: dict[str, Any] = {"policy": forecaster.no_skill, "skill_p": forecaster.skill_p}
    for regime, name in sorted(forecaster.regime_models.items()):
        record = forecaster.skill.get(name)
        label = REGIME_LABELS[regime]
        out[label] = dict(record or {}, model=name, route=routes[regime],
                          verdict=skill_verdict(record or {}, forecaster.skill_p),
                          line=describe_route(label, name, record, routes[regime],
                                              forecaster.skill_p))
    return out


def _write_report(report_dir: Path, metrics: dict[str, Any], cfg: PipelineConfig,
                  result: BacktestResult, strat_daily: pd.Series, bh_daily: pd.Series,
                  diagnostics: Diagnostics | None, run: dict[str, Any]) -> None:
    """The run folder, written whole (``diagnostics`` None: no tearsheet)."""
    with staged_folder(report_dir) as staged:
        if diagnostics is not None:
            write_tearsheet(staged / "tearsheet.html", clean_json(metrics), strat_daily,
                            bh_daily, f"bt-lstm: {metrics['dataset']} (out of sample, after "
                                      f"costs)", diagnostics)
        write_backtest_files(staged, result, strat_daily, bh_daily)
        atomic_write_json(staged / "config.json", cfg.to_dict())
        atomic_write_json(staged / "metrics.json", clean_json(metrics))
        write_manifest(staged, **run)


def write_backtest_files(folder: Path, result: BacktestResult, strat_daily: pd.Series,
                         bh_daily: pd.Series) -> None:
    """returns.csv, bars.csv, trades.csv and fills.csv of a backtest, each written atomically."""
    returns = pd.DataFrame({"strategy": strat_daily, "buy_and_hold": bh_daily})
    atomic_write_text(folder / "returns.csv", returns.to_csv())
    atomic_write_text(folder / "bars.csv", result.bars.to_csv())
    atomic_write_text(folder / "trades.csv", result.trades.to_csv(index=False))
    atomic_write_text(folder / "fills.csv", result.fills.to_csv(index=False))


def trading_diagnostics(frame: pd.DataFrame, test: pd.DataFrame, result: BacktestResult,
                        forecaster: Forecaster, model_dir: Path,
                        cfg: PipelineConfig) -> Diagnostics:
    """The test bars' traded forecasts, the networks' own forecasts where the skill guard kept
    a regime flat (computed only then), the threshold and each regime's validation losses."""
    traded = result.bars["forecast"].to_numpy(dtype=float)
    raw = None
    if any(route == FLAT for route in forecaster.routes().values()):
        raw_fc = forecaster.with_policy("trade", forecaster.skill_p)
        start = len(frame) - len(test)  # the test part: the last rows of frame
        raw = raw_fc.forecast_frame(frame, start)["forecast"].iloc[start:].to_numpy(dtype=float)
    histories = {}
    for regime, name in sorted(forecaster.regime_models.items()):
        meta = _read_json(model_dir / f"{name}.json")
        histories[f"{REGIME_LABELS[regime]} ({name})"] = meta.get("history") or []
    return Diagnostics(traded=traded, threshold=cfg.strategy.threshold, raw=raw,
                       histories=histories)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def forecast_summary(diag: Diagnostics) -> dict[str, Any]:
    """The threshold beside the reach of the forecasts (largest |forecast|), traded and raw."""
    def reach(a: Any) -> float | None:
        a = None if a is None else a[np.isfinite(a)]
        return None if a is None or not len(a) else float(np.max(np.abs(a)))

    return {"threshold": diag.threshold, "max_abs_traded": reach(diag.traded),
            "max_abs_networks": reach(diag.raw) if diag.raw is not None
            else reach(diag.traded)}


def no_trade_reason(metrics: dict[str, Any]) -> str | None:
    """One line when the run never traded: the skill guard, the threshold, both, or orders."""
    strat = metrics["strategy"]
    if strat["trades"] or strat["exposure"]:
        return None
    skill, fc = metrics["skill"], metrics["forecasts"]
    flat = [k for k in REGIME_LABELS if isinstance(skill.get(k), dict)
            and skill[k]["route"] == FLAT]
    traded = [k for k in REGIME_LABELS if isinstance(skill.get(k), dict) and k not in flat]
    thr = fc["threshold"]
    reach = fc["max_abs_traded"] if traded else fc["max_abs_networks"]
    above = reach is not None and reach < thr
    reach_text = "n/a" if reach is None else f"{reach:.4g}"
    guard = (f"the skill guard kept {'every regime' if not traded else ', '.join(flat)} flat "
             f"(no validated skill; --no-skill trade shows what the networks would have done)")
    limit = (f"--threshold {thr:g} is above every forecast of the "
             f"{'networks' if not traded else 'regimes that trade'} (largest |forecast| "
             f"{reach_text}; try a threshold below it)")
    if not traded:
        return "no trades: " + guard + (f", and {limit}" if above else "")
    if above:
        return "no trades: " + limit + (f"; also {guard}" if flat else "")
    return (f"no trades: {strat.get('rejected_orders', 0)} orders rejected, "
            f"{strat.get('rounded_to_zero', 0)} sizes rounded to 0 (see --fraction and --cash)")
