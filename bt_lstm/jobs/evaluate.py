"""Evaluation job: score the regime models and the baselines on test bars, write the outputs.

For the main job's models the test part of its split is scored; for a walk-forward run, every
fold's test span with that fold's models (baselines refitted on each fold's training span).
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.backtest.reports import write_forecast_plot
from bt_lstm.config import PipelineConfig
from bt_lstm.data.files import (
    atomic_write_json,
    atomic_write_text,
    clean_json,
    staged_folder,
)
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import finish_run, new_run_dir, written_files
from bt_lstm.models.forecast import Forecaster, load_forecaster
from bt_lstm.research.baselines import MODELS, segment_forecasts
from bt_lstm.research.scoring import diebold_mariano, regression_scores
from bt_lstm.signals.regimes import REGIME_LABELS
from bt_lstm.signals.windows import split_bounds

SCORE_COLUMNS = ("n", "mse", "rmse", "mae", "r2", "dir_acc", "ic")


def main_job_forecasts(frame: pd.DataFrame, cfg: PipelineConfig,
                       forecaster: Forecaster) -> pd.DataFrame:
    """All models' forecasts on the main job's test part."""
    return segment_forecasts(frame, cfg, split_bounds(len(frame), cfg.windows), forecaster)


def walk_forward_forecasts(frame: pd.DataFrame, cfg: PipelineConfig, folds: list,
                           folds_dir: Path) -> pd.DataFrame:
    """All models' forecasts on every fold's test span, each fold with its own models (under
    the config's no-skill policy)."""
    from bt_lstm.research.walkforward import fold_frame

    parts = []
    for fold in folds:
        fc = load_forecaster(folds_dir / f"fold_{fold.index:03d}", cfg.strategy.no_skill,
                             cfg.strategy.skill_p)
        part = segment_forecasts(fold_frame(frame, fold), cfg, fold.bounds(), fc)
        parts.append(part.assign(fold=fold.index))
    return pd.concat(parts)


def score_models(table: pd.DataFrame) -> dict[str, Any]:
    """Per model: overall and per-regime scores, and Diebold–Mariano against the zero forecast."""
    realised = table["realised"].to_numpy()
    zero_err = realised - table["zero"].to_numpy()
    out: dict[str, Any] = {}
    for name in MODELS:
        f = table[name].to_numpy()
        by_regime = {REGIME_LABELS[r]: regression_scores(f[mask], realised[mask])
                     for r in range(3) for mask in [table["regime"].to_numpy() == r]}
        dm = (diebold_mariano(realised - f, zero_err) if name != "zero"
              else {"dm": None, "p_value": None, "n": int(len(f))})
        out[name] = {"overall": regression_scores(f, realised), "by_regime": by_regime,
                     "dm_vs_zero": dm}
    return out


def format_table(scores: dict[str, Any]) -> str:
    """The overall scores of every model as a terminal table."""
    head = (f"{'model':<14}{'n':>7}{'MSE':>11}{'RMSE':>10}{'MAE':>10}{'R2':>9}{'dir acc':>9}"
            f"{'IC':>8}{'DM':>8}{'p':>7}")
    lines = [head]
    for name, s in scores.items():
        o, dm = s["overall"], s["dm_vs_zero"]
        acc = o["dir_acc"] * 100 if o["dir_acc"] == o["dir_acc"] else None  # NaN stays n/a
        lines.append(f"{name:<14}{o['n']:>7}{_f(o['mse'], '.3e'):>11}{_f(o['rmse'], '.5f'):>10}"
                     f"{_f(o['mae'], '.5f'):>10}{_f(o['r2'], '.4f'):>9}{_f(acc, '.1f'):>8}%"
                     f"{_f(o['ic'], '.3f'):>8}{_f(dm['dm'], '.2f'):>8}"
                     f"{_f(dm['p_value'], '.3f'):>7}")
    return "\n".join(lines)


def _f(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def write_evaluation(out_dir: Path, table: pd.DataFrame, scores: dict[str, Any],
                     header: dict[str, Any], grouped: bool = True) -> list[Path]:
    """evaluation.json, forecasts.csv, forecast_vs_realised.png and index.html, written whole
    into a new run folder ``out_dir/<stamp>`` (``out_dir/latest`` points at it), or into
    ``out_dir`` itself when not ``grouped`` (a walk-forward run's evaluation/). Returns every
    file written (and the reports index, for a grouped run)."""
    run_dir = new_run_dir(out_dir) if grouped else Path(out_dir)
    with staged_folder(run_dir) as staged:
        atomic_write_json(staged / "evaluation.json", clean_json(dict(header, models=scores)))
        atomic_write_text(staged / "forecasts.csv", table.to_csv(index_label="timestamp"))
        write_forecast_plot(table, staged / "forecast_vs_realised.png", header["dataset"])
        atomic_write_text(staged / "index.html", _page(scores, header))
        write_manifest(staged, job="evaluate", **header)
    if not grouped:
        return written_files(run_dir)
    return finish_run(run_dir, Path(out_dir).parent)


def _page(scores: dict[str, Any], header: dict[str, Any]) -> str:
    rows = []
    for name, s in scores.items():
        o, dm = s["overall"], s["dm_vs_zero"]
        cells = [html.escape(name), str(o["n"]), _f(o["mse"], ".3e"), _f(o["rmse"], ".5f"),
                 _f(o["mae"], ".5f"), _f(o["r2"], ".4f"), _f(o["dir_acc"], ".3f"),
                 _f(o["ic"], ".3f"), _f(dm["dm"], ".2f"), _f(dm["p_value"], ".3f")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    regime_rows = []
    for name, s in scores.items():
        for regime, o in s["by_regime"].items():
            regime_rows.append(f"<tr><td>{html.escape(name)}</td><td>{regime}</td><td>{o['n']}"
                               f"</td><td>{_f(o['mse'], '.3e')}</td><td>{_f(o['r2'], '.4f')}"
                               f"</td><td>{_f(o['dir_acc'], '.3f')}</td><td>"
                               f"{_f(o['ic'], '.3f')}</td></tr>")
    cols = "".join(f"<th>{c}</th>" for c in ("model", "n", "MSE", "RMSE", "MAE", "R²",
                                              "dir. acc.", "Spearman IC", "DM vs zero", "p"))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>evaluation: {html.escape(header['dataset'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;
font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
img{{max-width:100%}}</style></head><body>
<h1>Forecast evaluation: {html.escape(header['dataset'])}</h1>
<p>{html.escape(header['scope'])}: {html.escape(header['period']['start'])} to
{html.escape(header['period']['end'])}. Baselines are fitted on the same training data as the
regime models. DM: Diebold–Mariano statistic of squared-error loss against the zero forecast
(negative: smaller loss than zero), two-sided p-value.</p>
<table><tr>{cols}</tr>{''.join(rows)}</table>
<img src="forecast_vs_realised.png" alt="forecast vs realised per regime">
<h2>Per regime</h2><table><tr><th>model</th><th>regime</th><th>n</th><th>MSE</th><th>R²</th>
<th>dir. acc.</th><th>Spearman IC</th></tr>{''.join(regime_rows)}</table>
<p><a href="evaluation.json">evaluation.json</a> | <a href="forecasts.csv">forecasts.csv</a></p>
</body></html>
"""
