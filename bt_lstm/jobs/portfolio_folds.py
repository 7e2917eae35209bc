"""The folds of the walk-forward over several markets: which markets each fold holds, and their
panel models fitted in parallel (``--jobs`` / ``--scheduler``) and saved fold by fold.

Each fold's bundles are written whole and atomically as soon as the fold's last task is done
(``folds/fold_<i>/<market>/``), so a killed run resumes with every finished fold and fits only
the others. Every task trains with one torch thread, so the models are the same for any
``--jobs`` or scheduler.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from bt_lstm.config import PipelineConfig
from bt_lstm.jobs.panel_models import load_saved_panel, panel_key, save_panel
from bt_lstm.jobs.portfolio import min_market_train
from bt_lstm.models.forecast import Forecaster
from bt_lstm.models.training import one_torch_thread
from bt_lstm.research.panel import PanelFit, fit_panel, panel_bounds
from bt_lstm.research.pipeline import ProgressFactory
from bt_lstm.research.walkforward import Fold, parallel_map
from bt_lstm.signals.calendar import CalendarSplit, check_market_parts
from bt_lstm.signals.groups import data_bar

logger = logging.getLogger(__name__)


@dataclass
class PanelFold:
    """One fold of the panel walk-forward: its dates, the markets in it (their bars from the
    fold's training start to its test end) and the folder of its bundles."""

    fold: Fold
    split: CalendarSplit
    frames: dict[str, pd.DataFrame]
    fold_dir: Path

    @property
    def index(self) -> int:
        """The fold's number."""
        return self.fold.index


def fold_split(timeline: pd.DatetimeIndex, fold: Fold) -> CalendarSplit:
    """A fold's bar ranges on the common timeline as dates (the fit part, validation, test)."""
    return CalendarSplit(timeline[fold.fit[0]], timeline[fold.fit[1]], timeline[fold.val[0]],
                         timeline[fold.val[1]], timeline[fold.test[0]])


def fold_end(timeline: pd.DatetimeIndex, fold: Fold) -> pd.Timestamp | None:
    """The first time after the fold's test span (None for the last fold)."""
    return timeline[fold.test[1]] if fold.test[1] < len(timeline) else None


def _fold_frames(frames: Mapping[str, pd.DataFrame], timeline: pd.DatetimeIndex,
                 fold: Fold) -> dict[str, pd.DataFrame]:
    """Each market's bars from the fold's training start up to the end of its test span."""
    start, end = timeline[fold.train[0]], fold_end(timeline, fold)
    return {m: f[(f.index >= start) & ((f.index < end) if end is not None else True)]
            for m, f in frames.items()}


def _eligible(subs: Mapping[str, pd.DataFrame], split: CalendarSplit, cfg: PipelineConfig,
              joined: set[str], fold: Fold, bar: pd.Timedelta) -> list[str]:
    out = []
    for m, b in panel_bounds(subs, split, cfg).items():
        try:
            check_market_parts(m, b, split, min_market_train(cfg, bar))
        except ValueError:
            if m in joined and b.test[1] > b.test[0]:
                raise ValueError(f"{m}: too few bars in the training span of fold "
                                 f"{fold.index} after it joined at an earlier fold (a gap of "
                                 f"months?); trim it with --start/--end or drop it") from None
            continue
        out.append(m)
    return out


def plan_panel_folds(frames: Mapping[str, pd.DataFrame], timeline: pd.DatetimeIndex,
                     folds: list[Fold], cfg: PipelineConfig, folds_dir: Path) -> list[PanelFold]:
    """The markets of every fold: a market joins at the first fold with enough training bars
    and never skips a fold afterwards.

    Raises
    ------
    ValueError
        A fold without any market, or a market that joined and then lacks training bars.
    """
    out: list[PanelFold] = []
    joined: set[str] = set()
    bar = data_bar(next(iter(frames.values())).index)  # the panel's (aligned: one for all)
    for fold in folds:
        split = fold_split(timeline, fold)
        subs = _fold_frames(frames, timeline, fold)
        markets = _eligible(subs, split, cfg, joined, fold, bar)
        if not markets:
            raise ValueError(f"fold {fold.index}: no market has enough bars for its spans")
        joined.update(markets)
        out.append(PanelFold(fold, split, {m: subs[m] for m in markets},
                             Path(folds_dir) / f"fold_{fold.index:03d}"))
    return out


def _fit_task(frames: Mapping[str, pd.DataFrame], cfg: PipelineConfig, split: CalendarSplit,
              mode: str, progress_factory: ProgressFactory | None) -> PanelFit:
    with one_torch_thread():  # the same models for any --jobs or scheduler
        return fit_panel(frames, cfg, split, mode, progress_factory)


def _merge(fits: list[PanelFit]) -> PanelFit:
    out = PanelFit({}, {}, {})
    for fit in fits:
        out.forecasters.update(fit.forecasters)
        out.metas.update(fit.metas)
        out.fallbacks.update(fit.fallbacks)
    return out


def fit_panel_folds(plans: list[PanelFold], cfg: PipelineConfig, mode: str, jobs: int = 1,
                    scheduler: str | None = None,
                    progress_factory: ProgressFactory | None = None
                    ) -> dict[int, dict[str, Forecaster]]:
    """Each fold's forecasters per market: its saved bundles when they match, else fitted.

    Parameters
    ----------
    mode
        ``pooled``: one task per fold (its networks train on all its markets' windows);
        ``per-market``: one task per fold and market.
    jobs
        joblib worker processes on this machine; ignored with ``scheduler``.
    scheduler
        Address of an existing Dask distributed scheduler (joblib's dask backend).
    progress_factory
        The training progress bars; used only when the tasks run in this process.

    Notes
    -----
    A fold is saved (all its markets' bundles in one staged folder moved into place) as soon as
    its last task returns, and read back from there, so a resumed run and an uninterrupted one
    trade the same models.
    """
    done: dict[int, dict[str, Forecaster]] = {}
    tasks: list[tuple[PanelFold, str, list[str]]] = []
    for p in plans:
        key = panel_key(p.frames, cfg, p.split, mode)
        found = load_saved_panel(p.fold_dir, list(p.frames), key, cfg)
        if found is not None:
            done[p.index] = found
            continue
        groups = [list(p.frames)] if mode == "pooled" else [[m] for m in p.frames]
        tasks += [(p, key, g) for g in groups]
    if tasks:
        logger.info("panel walk-forward: %d folds saved, %d tasks to fit", len(done), len(tasks))
    local = jobs == 1 and not scheduler  # progress bars only in this process
    results = parallel_map(_fit_task, [({m: p.frames[m] for m in g}, cfg, p.split, mode,
                                        progress_factory if local else None)
                                       for p, _, g in tasks], jobs, scheduler)
    parts: dict[int, list[PanelFit]] = {}
    for (p, key, _), fit in zip(tasks, results):
        parts.setdefault(p.index, []).append(fit)
        if sum(t[0].index == p.index for t in tasks) == len(parts[p.index]):
            save_panel(p.fold_dir, p.frames, _merge(parts.pop(p.index)), key, cfg,
                       p.split, mode)
            done[p.index] = load_saved_panel(p.fold_dir, list(p.frames), key, cfg)
            logger.info("fold %d fitted and saved in %s", p.index, p.fold_dir)
    return {p.index: done[p.index] for p in plans}
