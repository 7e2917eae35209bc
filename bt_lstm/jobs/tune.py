"""The `tune` job: search hyperparameters on the bars before the test part, write the study
folder (best_config.json, trials.csv, index.html, study.json, manifest.json)."""
from __future__ import annotations

import hashlib
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from bt_lstm.backtest.metrics import PERIODS_PER_YEAR
from bt_lstm.config import PipelineConfig, replace
from bt_lstm.data.candles import fingerprint_frame
from bt_lstm.data.files import atomic_write_json, atomic_write_text, clean_json
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.research.search_space import apply_params
from bt_lstm.research.selection import round_trip_cost
from bt_lstm.research.stats import deflated_sharpe
from bt_lstm.research.tuning import JOURNAL, TuneSpec, mask_url, read_study, run_study
from bt_lstm.signals.regimes import REGIME_LABELS
from bt_lstm.signals.windows import SplitBounds, split_bounds

JOURNAL_FILE = "journal.log"


@dataclass
class TuneResult:
    folder: Path
    best_config: PipelineConfig | None
    study: dict[str, Any]  # what study.json holds
    interrupted: bool


def tuning_span(frame: pd.DataFrame, cfg: PipelineConfig) -> tuple[pd.DataFrame, SplitBounds]:
    """The main job's split, cut before the test part: only these bars reach any trial."""
    bounds = split_bounds(len(frame), cfg.windows)
    return frame.iloc[:bounds.test[0]], bounds


def default_study_name(frame: pd.DataFrame, cfg: PipelineConfig, space: dict,
                       prune: bool) -> str:
    """Same data, config, space and seed -> same name, so running the command again resumes."""
    key = json.dumps({"data": fingerprint_frame(frame), "cfg": cfg.training_dict(),
                      "space": space, "prune": prune}, sort_keys=True)
    return "s" + hashlib.sha256(key.encode()).hexdigest()[:10]


def make_spec(frame: pd.DataFrame, bounds: SplitBounds, cfg: PipelineConfig, space: dict,
              folder: Path, *, study: str, storage: str | None, n_trials: int,
              prune: bool = True, threshold: float | None = None, heartbeat_s: int = 10
              ) -> TuneSpec:
    """The worker spec; the journal file lives in the study folder unless --storage is given."""
    url = storage or f"{JOURNAL}{(folder / JOURNAL_FILE).resolve()}"
    floor = round_trip_cost(cfg.strategy) if threshold is None else threshold
    return TuneSpec(frame=frame, bounds=bounds, cfg=cfg, space=space, study_name=study,
                    storage=url, n_trials=n_trials, seed=cfg.train.seed, prune=prune,
                    threshold_floor=floor, heartbeat_s=heartbeat_s)


def best_config(cfg: PipelineConfig, best: dict[str, Any]) -> PipelineConfig:
    """The base config with the best trial's settings and its validation-chosen threshold."""
    out = apply_params(cfg, best["params"])
    return replace(out, strategy=replace(out.strategy, threshold=float(best["threshold"])))


def run_tune(frame: pd.DataFrame, dataset: str, timeframe: str, cfg: PipelineConfig,
             space: dict, *, n_trials: int, reports_dir: Path, study: str | None = None,
             storage: str | None = None, jobs: int = 1, prune: bool = True,
             threshold: float | None = None, heartbeat_s: int = 10,
             stop: Callable[[], bool] | None = None,
             progress: Callable[[int, float | None], None] | None = None,
             prepare: Callable[[TuneSpec], None] | None = None) -> TuneResult:
    """Tune on the training and validation parts of the main job's split; write the folder.

    Notes
    -----
    The candles are cut before the test part's first bar, so no trial can read a test bar;
    the regime classifier and scaler are fitted on the training part, networks early-stop
    and are scored on the validation tail after the purge gap, as in the main job.
    """
    part, bounds = tuning_span(frame, cfg)
    study = study or default_study_name(part, cfg, space, prune)
    folder = Path(reports_dir) / f"tune_{dataset}_{timeframe}_{study}"
    best, summary = tune_span(part, bounds, cfg, space, folder, study=study, n_trials=n_trials,
                              storage=storage, jobs=jobs, prune=prune, threshold=threshold,
                              heartbeat_s=heartbeat_s, stop=stop, progress=progress,
                              prepare=prepare, labels=(dataset, timeframe), full=frame)
    return TuneResult(folder, best, summary, bool(stop and stop()))


def tune_span(part: pd.DataFrame, bounds: SplitBounds, cfg: PipelineConfig, space: dict,
              folder: Path, *, study: str, n_trials: int, storage: str | None = None,
              jobs: int = 1, prune: bool = True, threshold: float | None = None,
              heartbeat_s: int = 10, stop: Callable[[], bool] | None = None,
              progress: Callable[[int, float | None], None] | None = None,
              prepare: Callable[[TuneSpec], None] | None = None,
              labels: tuple[str, str] = ("", ""), full: pd.DataFrame | None = None,
              charts: bool = True) -> tuple[PipelineConfig | None, dict[str, Any]]:
    """Run (or resume) a study on ``part`` (bars before a test span; ``bounds`` inside it)
    and write its folder; return the best config (None if no trial completed) and study.json.
    Walk-forward calls this once per fold with the fold's training span."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = make_spec(part, bounds, cfg, space, folder, study=study, storage=storage,
                     n_trials=n_trials, prune=prune, threshold=threshold,
                     heartbeat_s=heartbeat_s)
    if prepare is not None:
        prepare(spec)
    run_study(spec, jobs, stop, progress)
    data = read_study(spec, charts=charts)
    full = part if full is None else full
    summary = study_summary(spec, data, full, jobs, bounds)
    summary["selection_luck"] = clean_json(selection_luck(summary))
    best = best_config(cfg, data["best"]) if data["best"] else None
    if best is not None:  # later runs with --config deflate their Sharpe by this study's trials
        best = replace(best, provenance=replace(
            best.provenance, origin="tuning", n_trials=max(1, int(summary["n_trials"])),
            trials_sharpe_var=summary["trial_sharpe_var"], study=spec.study_name))
    write_study_folder(folder, spec, data, summary, best, labels[0], labels[1], full)
    return best, summary


def selection_luck(summary: dict[str, Any]) -> dict[str, Any]:
    """How much the best trial's validation Sharpe could owe to picking the best of N trials:
    its deflated Sharpe ratio against the expected maximum of N trials' Sharpes.

    Only the trials' annualised Sharpes are stored, so the daily returns are taken as normal
    (skewness 0, raw kurtosis 3) over the validation days; per-day figures are the annual ones
    over sqrt(365) and the variance over 365.
    """
    best = (summary.get("best") or {}).get("val_sharpe")
    n_days, n_trials = summary["n_val_days"], max(1, int(summary["n_trials"]))
    var = summary["trial_sharpe_var"]
    if best is None or var is None or n_days < 2:
        return {"dsr": None, "reading": "too few finished trials to say how much of the best "
                                        "validation Sharpe comes from selection"}
    per = math.sqrt(PERIODS_PER_YEAR)
    dsr, sr_star = deflated_sharpe(best / per, n_days, 0.0, 3.0, n_trials, var / PERIODS_PER_YEAR)
    reading = (f"the best of {n_trials} trials has validation Sharpe {best:.2f}; picking the "
               f"best of {n_trials} would give {sr_star * per:.2f} on average from noise alone, "
               f"so the probability that its true Sharpe is above zero after that selection "
               f"(DSR) is {dsr:.2f}")
    return {"dsr": dsr, "expected_max_sharpe": sr_star * per, "n_trials": n_trials,
            "trials_sharpe_var": var, "best_val_sharpe": best, "n_val_days": n_days,
            "assumes": "normal daily returns (skewness 0, raw kurtosis 3)", "reading": reading}


def study_summary(spec: TuneSpec, data: dict[str, Any], frame: pd.DataFrame, jobs: int,
                  bounds: SplitBounds) -> dict[str, Any]:
    trials = data["trials"]
    count = {s: sum(t["state"] == s for t in trials) for s in
             ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    sharpes = [t["val_sharpe"] for t in trials
               if t["state"] == "COMPLETE" and t["val_sharpe"] is not None]
    idx = spec.frame.index
    return clean_json({
        "study": spec.study_name, "storage": _storage_label(spec.storage),
        "sampler": data["sampler"], "pruner": data["pruner"], "seed": spec.seed,
        "worker_seeds": ("seed + worker index" if spec.storage.startswith(JOURNAL)
                         else "seed mixed with host and process id (shared database)"),
        "jobs": jobs, "n_trials_requested": spec.n_trials,
        "n_complete": count["COMPLETE"], "n_pruned": count["PRUNED"],
        "n_failed": count["FAIL"], "n_running": count["RUNNING"],
        # For the Deflated Sharpe Ratio: every configuration tried, and the spread of the
        # validation Sharpe ratios of those that finished (daily returns, annualised by 365).
        "n_trials": count["COMPLETE"] + count["PRUNED"] + count["FAIL"],
        "trial_sharpes": sharpes,
        "trial_sharpe_var": float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else None,
        "sharpe_periods_per_year": 365, "sharpe_frequency": "daily",
        "n_val_days": int(len(pd.Index(idx[bounds.val[0]:bounds.val[1]].normalize()).unique())),
        "objective": "validation MSE / validation MSE of the zero forecast (minimised)",
        "threshold_floor": spec.threshold_floor,
        "best": data["best"],
        "space": spec.space,
        "data_fingerprint": fingerprint_frame(frame),
        "tuning_fingerprint": fingerprint_frame(spec.frame),
        "train_span": [str(idx[bounds.train[0]]), str(idx[bounds.train[1] - 1])],
        "val_span": [str(idx[bounds.val[0]]), str(idx[bounds.val[1] - 1])],
        "test_start_never_read": str(frame.index[bounds.test[0]]) if bounds.test[0] < len(frame)
        else None,
    })


def _storage_label(url: str) -> str:
    return f"journal file {url[len(JOURNAL):]}" if url.startswith(JOURNAL) else mask_url(url)


def write_study_folder(folder: Path, spec: TuneSpec, data: dict[str, Any],
                       summary: dict[str, Any], best: PipelineConfig | None, dataset: str,
                       timeframe: str, frame: pd.DataFrame) -> None:
    """Each file written atomically; the journal file beside them is the study itself."""
    table = trials_frame(data["trials"])
    atomic_write_text(folder / "trials.csv", table.to_csv(index=False))
    atomic_write_json(folder / "study.json", summary)
    if best is not None:
        atomic_write_text(folder / "best_config.json", best.to_json() + "\n")
    atomic_write_text(folder / "index.html", index_html(summary, data, dataset, timeframe))
    write_manifest(folder, job="tune", dataset=dataset, timeframe=timeframe,
                   data_fingerprint=summary["data_fingerprint"], bars=len(frame),
                   seeds={"train": spec.seed, "sampler": spec.seed},
                   config=spec.cfg.to_dict())


def trials_frame(trials: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial: number, state, value, params, duration, pruned step, Sharpe..."""
    rows = []
    for t in trials:
        row = {k: t[k] for k in ("number", "state", "value", "duration_s", "pruned_step",
                                 "pruned_at", "val_sharpe", "threshold", "fail_reason")}
        row.update({f"param_{k}": v for k, v in t["params"].items()})
        for name, m in t["per_model"].items():
            row[f"{name}_mse_ratio"] = m.get("mse_ratio")
        rows.append(row)
    return pd.DataFrame(rows)


def regime_tables(trials: list[dict[str, Any]], top: int = 10) -> dict[str, pd.DataFrame]:
    """Per model of the plan (regime or pooled): the best completed trials on its windows."""
    out: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        if t["state"] != "COMPLETE":
            continue
        for name, m in t["per_model"].items():
            if m.get("mse_ratio") is None:
                continue
            label = (REGIME_LABELS[int(name.split("_")[1])] if name.startswith("regime_")
                     else f"pooled ({', '.join(m['regimes'])})")
            out.setdefault(label, []).append({"trial": t["number"], "mse_ratio": m["mse_ratio"],
                                              "n_val": m["n_val"], "best_epoch": m["best_epoch"],
                                              **t["params"]})
    return {k: pd.DataFrame(v).sort_values(["mse_ratio", "trial"]).head(top)
            for k, v in sorted(out.items())}


def index_html(summary: dict[str, Any], data: dict[str, Any], dataset: str,
               timeframe: str) -> str:
    esc = html.escape
    best = summary.get("best") or {}
    head = (f"<h1>tune {esc(dataset)} {esc(timeframe)}: study {esc(summary['study'])}</h1>"
            f"<p>{summary['n_complete']} complete, {summary['n_pruned']} pruned, "
            f"{summary['n_failed']} failed of {summary['n_trials_requested']} requested; "
            f"storage {esc(str(summary['storage']))}; objective: {esc(summary['objective'])}. "
            f"Training {esc(' to '.join(summary['train_span']))}, validation "
            f"{esc(' to '.join(summary['val_span']))}; the test part is never read.</p>"
            f"<p>Best trial {best.get('number')}: value {best.get('value')}, params "
            f"{esc(json.dumps(best.get('params')))}, threshold {best.get('threshold')}, "
            f"validation Sharpe {best.get('val_sharpe')}</p>"
            f"<h2>How much of it could be luck</h2><p>"
            f"{esc(str((summary.get('selection_luck') or {}).get('reading', '')))}.</p>")
    tables = "".join(f"<h2>{esc(name)}</h2>" + table.to_html(index=False, float_format="%.4g")
                     for name, table in regime_tables(data["trials"]).items())
    charts = "".join(f"<h2>{esc(title)}</h2>{body}" for title, body in data["charts"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tune {esc(dataset)}"
            f"</title></head><body>{head}<h2>Per regime (best trials on each model's "
            f"validation windows)</h2>{tables}{charts}</body></html>\n")
