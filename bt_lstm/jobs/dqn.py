"""The DQN job: train (or reuse) agents per seed, backtest the test span, write the report."""
from __future__ import annotations

import logging
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from bt_lstm import __version__
from bt_lstm.backtest.engine import BacktestResult, run_backtest
from bt_lstm.backtest.metrics import score_backtest
from bt_lstm.backtest.reports import write_tearsheet
from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import fingerprint_frame, infer_bar
from bt_lstm.data.files import (
    atomic_write_json,
    clean_json,
    staged_folder,
)
from bt_lstm.jobs.backtest import luck_figures, write_backtest_files
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import finish_run, new_run_dir, run_id
from bt_lstm.rl.agent import obtain_agent
from bt_lstm.rl.spec import ACTIONS, DQNConfig, first_decision_bar
from bt_lstm.signals.windows import split_bounds

logger = logging.getLogger(__name__)


def seed_dirs(model_dir: Path, seeds: list[int]) -> list[Path]:
    """One agent folder per seed (the folder itself for a single seed)."""
    if len(seeds) == 1:
        return [model_dir]
    return [model_dir / f"seed{s}" for s in seeds]


def _seed_run(frame: pd.DataFrame, test: pd.DataFrame, cfg: PipelineConfig, dcfg: DQNConfig,
              folder: Path, spans: dict[str, tuple[int, int]], strategy_cls: type,
              retrain: bool, progress: Callable[[int, float], None] | None
              ) -> tuple[dict[str, Any], BacktestResult, tuple]:
    fp = fingerprint_frame(frame)
    agent, reused = obtain_agent(frame, dcfg, cfg.strategy, folder, spans["train"], spans["val"],
                                 fp, retrain, progress)
    q = agent.q_frame(frame, spans["test"][0])
    result = run_backtest(test, strategy_cls, cfg.strategy, qvalues=q, bar=infer_bar(frame.index),
                          agent=agent)
    scored = score_backtest(test, result, cfg)
    counts = result.bars["action"].value_counts()
    sel = agent.meta.get("selection", {})
    row = {"seed": dcfg.seed, "sharpe": scored[2]["sharpe"],
           "total_return": scored[2]["total_return"], "max_drawdown": scored[2]["max_drawdown"],
           "trades": scored[2]["trades"], "reused": reused, "dir": str(folder),
           "actions": {a: int(counts.get(i, 0)) for i, a in enumerate(ACTIONS)},
           "validation_log_return": sel.get("best_score"), "selected_step": sel.get("best_step")}
    return row, result, scored


def _spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every seed's row, and the mean, std, min and max of each figure over finite values."""
    out: dict[str, Any] = {"runs": rows}
    for stat in ("mean", "std", "min", "max"):
        out[stat] = {}
        for key in ("sharpe", "total_return", "max_drawdown"):
            v = np.array([r[key] for r in rows], dtype=float)
            v = v[np.isfinite(v)]
            need = 2 if stat == "std" else 1
            out[stat][key] = float({"mean": np.mean, "min": np.min, "max": np.max,
                                    "std": lambda a: np.std(a, ddof=1)}[stat](v)) if (
                len(v) >= need) else float("nan")
    return out


def run_dqn_job(frame: pd.DataFrame, dataset: str, timeframe: str, cfg: PipelineConfig,
                dcfg: DQNConfig, strategy_cls: type, model_dir: Path, report_dir: Path,
                retrain: bool = False, seeds: int = 1, tearsheet: bool = True,
                regime: tuple[Any, type] | None = None,
                progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train on the training span, select on validation, backtest the test span; write the
    run folder ``report_dir/<stamp>`` (``report_dir/latest`` points at it).

    Returns the metrics, plus ``run``: the run folder and every file written (not part of
    metrics.json).

    Parameters
    ----------
    seeds
        Agents with seeds ``dcfg.seed .. dcfg.seed + seeds - 1``; every seed's test figures are
        reported with their spread; the first seed's backtest fills the tearsheet.
    regime
        (forecaster, strategy class) of the regime-LSTM strategy, traded on the same test bars
        for comparison; None to skip it.
    """
    if seeds < 1:
        raise ValueError(f"--seeds {seeds}: use 1 or more")
    bounds = split_bounds(len(frame), cfg.windows)
    first = first_decision_bar(dcfg)
    if bounds.train[1] - first < 10 * dcfg.window:
        raise ValueError(f"{dataset}: the training span ({bounds.train[1]} bars) is too short "
                         f"for --window {dcfg.window}; use more data or a shorter window")
    spans = {"train": (first, bounds.train[1]), "val": bounds.val, "test": bounds.test}
    test = frame.iloc[bounds.test[0]:]
    seed_list = [dcfg.seed + i for i in range(seeds)]
    runs = [_seed_run(frame, test, cfg, replace(dcfg, seed=s), d, spans, strategy_cls, retrain,
                      progress) for s, d in zip(seed_list, seed_dirs(model_dir, seed_list))]
    rows = [r[0] for r in runs]
    result, (strat_daily, bh_daily, strategy, bh) = runs[0][1], runs[0][2]
    strategy["actions"] = rows[0]["actions"]
    metrics: dict[str, Any] = {
        "dataset": dataset, "timeframe": timeframe, "library_version": __version__,
        "qnet": dcfg.qnet, "features": dcfg.features, "window": dcfg.window,
        "allow_short": dcfg.allow_short,
        "period": {"start": str(test.index[0]), "end": str(test.index[-1]), "bars": len(test),
                   "days": len(strat_daily)},
        "spans": {k: [str(frame.index[a]), str(frame.index[b - 1])] for k, (a, b) in spans.items()},
        "strategy": strategy, "buy_and_hold": bh,
        "costs": {"commission": cfg.strategy.commission, "slippage": cfg.strategy.slippage},
        "seed_spread": _spread(rows), "statistics": luck_figures(strat_daily, bh_daily, cfg),
        "machine": {"python": platform.python_version()},
    }
    if regime is not None:
        forecaster, regime_cls = regime
        signals = forecaster.forecast_frame(frame).iloc[bounds.test[0]:]
        res = run_backtest(test, regime_cls, cfg.strategy, signals=signals, forecaster=forecaster,
                           inference="batch", bar=infer_bar(frame.index))
        metrics["regime_lstm"] = score_backtest(test, res, cfg)[2]
    run_dir = new_run_dir(report_dir)
    _write(run_dir, metrics, cfg, dcfg, result, strat_daily, bh_daily, tearsheet,
           {"job": "dqn", "run_id": run_id(run_dir, report_dir.parent), "dataset": dataset,
            "timeframe": timeframe, "data_fingerprint": fingerprint_frame(frame),
            "bars": len(frame), "seeds": {"dqn": seed_list}, "models": {"dir": str(model_dir)}})
    files = finish_run(run_dir, report_dir.parent)
    return dict(metrics, run={"dir": run_dir, "files": files})


def _write(report_dir: Path, metrics: dict[str, Any], cfg: PipelineConfig, dcfg: DQNConfig,
           result: BacktestResult, strat_daily: pd.Series, bh_daily: pd.Series,
           tearsheet: bool, run: dict[str, Any]) -> None:
    with staged_folder(report_dir) as staged:
        if tearsheet:
            write_tearsheet(staged / "tearsheet.html", clean_json(metrics), strat_daily,
                            bh_daily, f"bt-lstm DQN ({dcfg.qnet}): {metrics['dataset']} "
                                      f"(out of sample, after costs)")
        write_backtest_files(staged, result, strat_daily, bh_daily)
        atomic_write_json(staged / "config.json", {"pipeline": cfg.to_dict(),
                                                   "dqn": dcfg.to_dict()})
        atomic_write_json(staged / "metrics.json", clean_json(metrics))
        write_manifest(staged, **run)


def format_dqn(metrics: dict[str, Any]) -> str:
    """Terminal lines: DQN beside buy-and-hold and the regime LSTM, actions, every seed."""
    cols = [("DQN", metrics["strategy"]), ("buy&hold", metrics["buy_and_hold"])]
    if "regime_lstm" in metrics:
        cols.append(("regime LSTM", metrics["regime_lstm"]))
    lines = [f"{'':>14}" + "".join(f"{n:>14}" for n, _ in cols)]
    for key in ("total_return", "sharpe", "max_drawdown", "trades"):
        cells = [c.get(key) for _, c in cols]
        lines.append(f"{key:>14}" + "".join(
            f"{'-' if v is None else (f'{v:.4f}' if isinstance(v, float) else v):>14}"
            for v in cells))
    lines.append(f"actions (seed {metrics['seed_spread']['runs'][0]['seed']}): "
                 f"{metrics['strategy']['actions']}")
    for r in metrics["seed_spread"]["runs"]:
        lines.append(f"seed {r['seed']}: Sharpe {r['sharpe']:.3f}, return "
                     f"{100 * r['total_return']:.2f} %, trades {r['trades']}, "
                     f"validation log return {r['validation_log_return']:.4f}")
    if len(metrics["seed_spread"]["runs"]) > 1:
        m, s = metrics["seed_spread"]["mean"], metrics["seed_spread"]["std"]
        lines.append(f"seed spread: Sharpe {m['sharpe']:.3f} +- {s['sharpe']:.3f}, return "
                     f"{100 * m['total_return']:.2f} +- {100 * s['total_return']:.2f} %")
    return "\n".join(lines)
