"""The `tune` job: one study per network (pooled, then each regime) on the bars before the test
part; write the study folder (best_config.json, trials.csv, index.html, study.json, manifest)."""
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
from bt_lstm.config import ModelOverride, PipelineConfig, replace
from bt_lstm.data.candles import fingerprint_frame
from bt_lstm.data.files import atomic_write_json, atomic_write_text, clean_json
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import write_index
from bt_lstm.research.search_space import INT_PARAMS, PARAMS, apply_params
from bt_lstm.research.selection import round_trip_cost
from bt_lstm.research.stats import deflated_sharpe
from bt_lstm.research.tuned_fit import planned_regimes, validate_combined
from bt_lstm.research.tuning import (
    JOURNAL,
    PLOTLY_JS,
    TuneSpec,
    mask_url,
    read_study,
    run_study,
    write_plotly_js,
)
from bt_lstm.signals.regimes import REGIME_LABELS
from bt_lstm.signals.windows import SplitBounds, split_bounds

JOURNAL_FILE = "journal.log"


@dataclass
class TuneResult:
    """What ``run_tune`` returns: the study folder, the tuned ``best_config.json`` (None when no
    trial finished), what ``study.json`` holds, and whether Ctrl-C stopped it."""
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
    from bt_lstm.research.pipeline import feature_key

    key = json.dumps({"data": fingerprint_frame(frame), "cfg": cfg.training_dict(),
                      "space": space, "prune": prune, **feature_key(frame, cfg)}, sort_keys=True)
    return "s" + hashlib.sha256(key.encode()).hexdigest()[:10]


def make_spec(frame: pd.DataFrame, bounds: SplitBounds, cfg: PipelineConfig, space: dict,
              folder: Path, *, study: str, storage: str | None, n_trials: int,
              prune: bool = True, threshold: float | None = None, heartbeat_s: int = 10,
              regime: int | None = None) -> TuneSpec:
    """The worker spec; the journal file lives in the study folder unless --storage is given."""
    url = storage or f"{JOURNAL}{(folder / JOURNAL_FILE).resolve()}"
    floor = round_trip_cost(cfg.strategy) if threshold is None else threshold
    return TuneSpec(frame=frame, bounds=bounds, cfg=cfg, space=space, study_name=study,
                    storage=url, n_trials=n_trials, seed=cfg.train.seed, prune=prune,
                    threshold_floor=floor, heartbeat_s=heartbeat_s, regime=regime)


def study_key(regime: int | None) -> str:
    """The suffix of a network's study: ``<study>-pooled``, ``<study>-bullish``..."""
    return "pooled" if regime is None else REGIME_LABELS[regime]


def best_config(cfg: PipelineConfig, studies: list[tuple[str, TuneSpec, dict[str, Any]]]
                ) -> PipelineConfig | None:
    """The base config with the pooled study's best settings (the lookback is shared by every
    network) and one override per regime study with a completed trial; None before the pooled
    study has one."""
    pooled = studies[0][2]["best"] if studies else None
    if pooled is None:
        return None
    out = apply_params(cfg, pooled["params"])
    overrides = []
    for key, _, data in studies[1:]:
        if data["best"] is None:
            continue
        fields = {PARAMS[k][1]: (int(v) if k in INT_PARAMS else v)
                  for k, v in data["best"]["params"].items() if k != "lookback"}
        overrides.append(ModelOverride(model=key, **fields))
    return replace(out, overrides=tuple(overrides))


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
    write_index(Path(reports_dir))
    return TuneResult(folder, best, summary, bool(stop and stop()))


def tune_span(part: pd.DataFrame, bounds: SplitBounds, cfg: PipelineConfig, space: dict,
              folder: Path, *, study: str, n_trials: int, storage: str | None = None,
              jobs: int = 1, prune: bool = True, threshold: float | None = None,
              heartbeat_s: int = 10, stop: Callable[[], bool] | None = None,
              progress: Callable[[int, float | None], None] | None = None,
              prepare: Callable[[TuneSpec], None] | None = None,
              labels: tuple[str, str] = ("", ""), full: pd.DataFrame | None = None,
              charts: bool = True) -> tuple[PipelineConfig | None, dict[str, Any]]:
    """Run (or resume) the studies on ``part`` (bars before a test span; ``bounds`` inside
    it) and write their folder; return the best config (None if the pooled study has no
    completed trial) and study.json. Walk-forward calls this once per fold.

    Notes
    -----
    First ``<study>-pooled``: the pooled network on every regime's windows, over the whole
    space; its best lookback becomes the bundle's one window length. Then one study per regime
    that has a network of its own under that lookback, over the space without the lookback,
    each trial training that regime's network only. Finally the tuned networks are fitted
    together once and the trading threshold is chosen on the validation tail.
    """
    folder.mkdir(parents=True, exist_ok=True)
    studies: list[tuple[str, TuneSpec, dict[str, Any]]] = []

    def one(regime: int | None, base: PipelineConfig, sub: dict) -> dict[str, Any]:
        spec = make_spec(part, bounds, base, sub, folder, study=f"{study}-{study_key(regime)}",
                         storage=storage, n_trials=n_trials, prune=prune, threshold=threshold,
                         heartbeat_s=heartbeat_s, regime=regime)
        if prepare is not None:
            prepare(spec)
        done = n_trials * len(studies)
        run_study(spec, jobs, stop, None if progress is None else
                  (lambda n, best: progress(done + n, best)))
        data = read_study(spec, charts=charts)
        studies.append((study_key(regime), spec, data))
        return data

    pooled = one(None, cfg, space)
    sub = {k: v for k, v in space.items() if k != "lookback"}
    own: list[int] | None = None  # regimes with a network of their own
    if pooled["best"] is not None:
        shared = apply_params(cfg, {k: v for k, v in pooled["best"]["params"].items()
                                    if k == "lookback"})
        own = planned_regimes(part, bounds, shared)
        for regime in own if sub else []:
            if stop and stop():
                break
            one(regime, shared, sub)
    best = best_config(cfg, studies)
    floor = studies[0][1].threshold_floor
    final = validate_combined(part, bounds, best, floor) if best is not None else None
    if best is not None and final is not None:
        best = replace(best, strategy=replace(best.strategy, threshold=final["threshold"]))
    full = part if full is None else full
    summary = study_summary(study, studies, final, full, jobs, bounds)
    summary["pooled_for"] = (None if own is None else
                             [REGIME_LABELS[r] for r in range(3) if r not in own])
    summary["selection_luck"] = clean_json(selection_luck(summary))
    if best is not None:  # later runs with --config deflate their Sharpe by every trial tried
        best = replace(best, provenance=replace(
            best.provenance, origin="tuning", n_trials=max(1, int(summary["n_trials"])),
            trials_sharpe_var=summary["trial_sharpe_var"], study=study))
    write_study_folder(folder, studies, summary, best, labels[0], labels[1], full)
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


def _counts(trials: list[dict[str, Any]]) -> dict[str, int]:
    count = {s: sum(t["state"] == s for t in trials) for s in
             ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    return {"n_complete": count["COMPLETE"], "n_pruned": count["PRUNED"],
            "n_failed": count["FAIL"], "n_running": count["RUNNING"],
            "n_trials": count["COMPLETE"] + count["PRUNED"] + count["FAIL"]}


def study_summary(study: str, studies: list[tuple[str, TuneSpec, dict[str, Any]]],
                  final: dict[str, Any] | None, frame: pd.DataFrame, jobs: int,
                  bounds: SplitBounds) -> dict[str, Any]:
    """study.json: each network's study, the totals over all of them and the tuned whole."""
    spec0, data0 = studies[0][1], studies[0][2]
    trials = [t for _, _, d in studies for t in d["trials"]]
    sharpes = [t["val_sharpe"] for t in trials
               if t["state"] == "COMPLETE" and t["val_sharpe"] is not None]
    per = {key: {"study": spec.study_name, "regime": key, **_counts(d["trials"]),
                 "best": d["best"]} for key, spec, d in studies}
    best = None if final is None else {
        **final, "params": {k: (p["best"] or {}).get("params") for k, p in per.items()},
        "trials": {k: (p["best"] or {}).get("number") for k, p in per.items()}}
    idx = spec0.frame.index
    return clean_json({
        "study": study, "studies": per, "study_order": [key for key, _, _ in studies],
        "storage": _storage_label(spec0.storage),
        "sampler": data0["sampler"], "pruner": data0["pruner"], "seed": spec0.seed,
        "worker_seeds": ("seed + worker index" if spec0.storage.startswith(JOURNAL)
                         else "seed mixed with host and process id (shared database)"),
        "jobs": jobs, "n_trials_requested": spec0.n_trials,
        # For the Deflated Sharpe Ratio: every configuration tried in every study (totals
        # below), and the spread of the finished trials' validation Sharpe ratios (daily
        # returns, annualised by 365; each on its own network's validation bars).
        **_counts(trials),
        "trial_sharpes": sharpes,
        "trial_sharpe_var": float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else None,
        "sharpe_periods_per_year": 365, "sharpe_frequency": "daily",
        "n_val_days": int(len(pd.Index(idx[bounds.val[0]:bounds.val[1]].normalize()).unique())),
        "objective": "per network: validation MSE on its regime's windows / that of the zero "
                     "forecast (minimised)",
        "threshold_floor": spec0.threshold_floor,
        "best": best,
        "space": spec0.space,
        "data_fingerprint": fingerprint_frame(frame),
        "tuning_fingerprint": fingerprint_frame(spec0.frame),
        "train_span": [str(idx[bounds.train[0]]), str(idx[bounds.train[1] - 1])],
        "val_span": [str(idx[bounds.val[0]]), str(idx[bounds.val[1] - 1])],
        "test_start_never_read": str(frame.index[bounds.test[0]]) if bounds.test[0] < len(frame)
        else None,
    })


def _storage_label(url: str) -> str:
    return f"journal file {url[len(JOURNAL):]}" if url.startswith(JOURNAL) else mask_url(url)


def write_study_folder(folder: Path, studies: list[tuple[str, TuneSpec, dict[str, Any]]],
                       summary: dict[str, Any], best: PipelineConfig | None, dataset: str,
                       timeframe: str, frame: pd.DataFrame) -> None:
    """Each file written atomically; the journal file beside them holds the studies."""
    spec = studies[0][1]
    table = trials_frame(studies)
    atomic_write_text(folder / "trials.csv", table.to_csv(index=False))
    atomic_write_json(folder / "study.json", summary)
    if best is not None:
        atomic_write_text(folder / "best_config.json", best.to_json() + "\n")
    if any(d["charts"] for _, _, d in studies):
        write_plotly_js(folder)
    atomic_write_text(folder / "index.html", index_html(summary, studies, dataset, timeframe))
    write_manifest(folder, job="tune", run_id=folder.name, dataset=dataset, timeframe=timeframe,
                   data_fingerprint=summary["data_fingerprint"], bars=len(frame),
                   seeds={"train": spec.seed, "sampler": spec.seed},
                   config=spec.cfg.to_dict())


def trials_frame(studies: list[tuple[str, TuneSpec, dict[str, Any]]]) -> pd.DataFrame:
    """One row per trial of every study: regime, number, state, value, params, duration..."""
    rows = []
    for key, _, data in studies:
        for t in data["trials"]:
            row = {"regime": key}
            row.update({k: t[k] for k in ("number", "state", "value", "duration_s",
                                          "pruned_step", "pruned_at", "val_sharpe",
                                          "threshold", "fail_reason")})
            row.update({f"param_{k}": v for k, v in t["params"].items()})
            rows.append(row)
    return pd.DataFrame(rows)


def top_trials(trials: list[dict[str, Any]], top: int = 10) -> pd.DataFrame:
    """The best completed trials of one study."""
    rows = [{"trial": t["number"], "mse_ratio": t["value"], "val_sharpe": t["val_sharpe"],
             **{k: m.get(k) for m in t["per_model"].values() for k in ("n_val", "best_epoch")},
             **t["params"]} for t in trials if t["state"] == "COMPLETE"]
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["mse_ratio", "trial"]).head(top)


def _g(value: Any) -> str:
    """A number for people: 4 significant digits (n/a for none)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    esc = html.escape
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{esc(_g(c))}</td>" for c in r) + "</tr>"
                      for r in rows) + "</table>")


def best_tables(summary: dict[str, Any]) -> str:
    """The tuned whole on the validation tail, then each network's best settings, as tables."""
    best = summary.get("best") or {}
    whole = _table(["MSE ratio to zero", "threshold", "validation Sharpe"],
                   [[best.get("value"), best.get("threshold"), best.get("val_sharpe")]])
    params = best.get("params") or {}
    names = sorted({k for p in params.values() if p for k in p})
    rows = [[net, (best.get("trials") or {}).get(net), *[(p or {}).get(k) for k in names]]
            for net, p in params.items()]
    return whole + (_table(["network", "best trial", *names], rows) if rows else "")


def index_html(summary: dict[str, Any], studies: list[tuple[str, TuneSpec, dict[str, Any]]],
               dataset: str, timeframe: str) -> str:
    """The study folder's page: tables of the studies and their best settings, Optuna's charts
    (plotly.min.js loaded once from the folder)."""
    esc = html.escape
    overview = _table(
        ["studies", "trials", "complete", "pruned", "failed", "requested per study", "storage",
         "training", "validation"],
        [[len(studies), summary["n_trials"], summary["n_complete"], summary["n_pruned"],
          summary["n_failed"], summary["n_trials_requested"], str(summary["storage"]),
          " to ".join(summary["train_span"]), " to ".join(summary["val_span"])]])
    head = (f"<h1>tune {esc(dataset)} {esc(timeframe)}: study {esc(summary['study'])}</h1>"
            f"{overview}<p>Objective: {esc(summary['objective'])}. The test part is never "
            f"read.</p><h2>Tuned networks together, on the validation tail</h2>"
            f"{best_tables(summary)}<p>Regimes forecast by the pooled network (too few "
            f"windows for one of their own): "
            f"{esc(', '.join(summary.get('pooled_for') or []) or 'none')}.</p>"
            f"<h2>How much of it could be luck</h2><p>"
            f"{esc(str((summary.get('selection_luck') or {}).get('reading', '')))}.</p>")
    body = []
    for key, spec, data in studies:
        s = summary["studies"][key]
        body.append(f"<h2>{esc(key)}: study {esc(spec.study_name)}</h2><p>{s['n_complete']} "
                    f"complete, {s['n_pruned']} pruned, {s['n_failed']} failed</p>")
        table = top_trials(data["trials"])
        body.append(table.to_html(index=False, float_format="%.4g") if len(table) else
                    "<p>no completed trial</p>")
        body.extend(f"<h3>{esc(key)}: {esc(title)}</h3>{chart}"
                    for title, chart in data["charts"])
    script = (f"<script src='{PLOTLY_JS}'></script>" if any(d["charts"] for _, _, d in studies)
              else "")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tune {esc(dataset)}"
            f"</title>{script}<style>body{{font-family:sans-serif;margin:2em}}table{{"
            f"border-collapse:collapse;font-size:13px;margin:.5em 0}}td,th{{border:1px solid "
            f"#ccc;padding:3px 8px}}</style></head><body>{head}{''.join(body)}</body></html>\n")
