"""Seed spread: the same pipeline trained with K seeds (in parallel), each seed's out-of-sample
figures with their mean and standard deviation, and the mean forecast of the K models."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from bt_lstm.config import PipelineConfig, replace
from bt_lstm.models.training import one_torch_thread
from bt_lstm.research.pipeline import FitResult, ProgressFactory, fit_pipeline
from bt_lstm.signals.windows import SplitBounds

ENSEMBLES = ("none", "mean")
SPREAD_KEYS = ("sharpe", "total_return", "mse_ratio")


def seed_configs(cfg: PipelineConfig, n_seeds: int) -> list[PipelineConfig]:
    """``cfg`` with seeds ``seed .. seed + n_seeds - 1``; the first is ``cfg`` itself."""
    if not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"--seeds {n_seeds}: use 1 or more")
    return [cfg] + [replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + i))
                    for i in range(1, n_seeds)]


def _fit_one_thread(frame: pd.DataFrame, cfg: PipelineConfig) -> tuple[FitResult, SplitBounds]:
    with one_torch_thread():  # K processes on the cores, not K x all threads
        return fit_pipeline(frame, cfg)


def fit_seeds(frame: pd.DataFrame, cfgs: Sequence[PipelineConfig], jobs: int = 1,
              progress_factory: ProgressFactory | None = None
              ) -> list[tuple[FitResult, SplitBounds]]:
    """Fit the main job's pipeline once per config (one per seed), in ``jobs`` processes.

    With ``jobs == 1`` they are fitted here one after another, with progress bars; otherwise in
    joblib worker processes (no progress bars), each on one torch thread.
    """
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: use 1 or more")
    if jobs == 1 or len(cfgs) <= 1:  # nothing to spread (every seed's bundle was reused)
        return [fit_pipeline(frame, c, progress_factory=progress_factory) for c in cfgs]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=min(jobs, len(cfgs)))(
        delayed(_fit_one_thread)(frame, c) for c in cfgs))


def ensemble_forecasts(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The mean forecast of several models' ``forecast_frame`` outputs over the same bars.

    Regimes come from the first (with the rule classifier they agree for every seed); a bar
    without a forecast in any model has none in the ensemble.
    """
    first = frames[0]
    stacked = np.stack([f["forecast"].reindex(first.index).to_numpy(dtype=float)
                        for f in frames])  # (K, T)
    out = first.copy()  # regime (and fold, in a walk-forward) of the first
    out["model"] = f"mean of {len(frames)}"
    out["forecast"] = stacked.mean(axis=0)  # NaN where any model has none
    return out


def seed_spread(runs: list[dict[str, Any]], ensemble: str) -> dict[str, Any]:
    """Each seed's figures with the mean and (sample) standard deviation across seeds."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "ensemble": ensemble,
                           "runs": runs, "mean": {}, "std": {}}
    for key in SPREAD_KEYS:
        values = np.array([r[key] for r in runs], dtype=float)
        values = values[np.isfinite(values)]
        out["mean"][key] = float(values.mean()) if len(values) else float("nan")
        out["std"][key] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return out

