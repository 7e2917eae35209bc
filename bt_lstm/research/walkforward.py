"""Walk-forward: the fold plan (pure) and fold x regime training, in parallel and resumable.

Legend: T bars, F features, L lookback. Fold spans are half-open bar ranges [start, stop) into
the candles the walk-forward runs on.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from bt_lstm import __version__
from bt_lstm.config import PipelineConfig, replace
from bt_lstm.data.candles import fingerprint_frame, parse_duration
from bt_lstm.data.files import replace_dir, staging_dir
from bt_lstm.models.artifacts import ArtifactError, read_manifest
from bt_lstm.models.forecast import Forecaster, load_forecaster
from bt_lstm.models.training import one_torch_thread
from bt_lstm.research.pipeline import (
    PreparedWindows,
    assemble_forecaster,
    feature_key,
    model_file_meta,
    plan_models,
    prepare_windows,
    train_one,
)
from bt_lstm.signals.groups import group_warmup_bars
from bt_lstm.signals.regimes import REGIME_LABELS
from bt_lstm.signals.windows import SplitBounds

logger = logging.getLogger(__name__)

MODES = ("rolling", "expanding")


def parse_span(text: str | int, bar: pd.Timedelta, what: str) -> int:
    """A duration as bars: an int is bars already; '365d', '90d', '6h' are divided by ``bar``."""
    if isinstance(text, (int, np.integer)):
        bars = int(text)
    else:
        span = parse_duration(str(text))
        if span is None:
            raise ValueError(f"{what}={text!r} is not a duration; use e.g. 365d, 90d, 6h, 2w "
                             f"(or give a number of bars)")
        bars = int(span // bar)
        if bars >= 1 and span % bar != pd.Timedelta(0):
            raise ValueError(f"{what}={text} is not a whole number of bars of {_label(bar)}")
    if bars < 1:
        raise ValueError(f"{what}={text!r} is shorter than one bar ({_label(bar)})")
    return bars


def _label(bar: pd.Timedelta) -> str:
    minutes = int(bar.total_seconds() // 60)
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


@dataclass(frozen=True)
class WalkForwardSpec:
    """How folds are cut: spans in bars; ``embargo_bars`` adds to the config's purge gap."""

    train_bars: int
    test_bars: int
    step_bars: int | None = None  # distance between fold starts; must equal test_bars
    mode: str = "rolling"
    embargo_bars: int = 0

    def __post_init__(self) -> None:
        """Refuse an unknown mode, empty spans, a negative embargo and a step that differs from
        the test span (test spans must tile the evaluated period)."""
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: use one of {', '.join(MODES)}")
        if self.train_bars < 1 or self.test_bars < 1 or self.embargo_bars < 0:
            raise ValueError("train and test spans must be >= 1 bar and the embargo >= 0")
        if self.step_bars is not None and self.step_bars != self.test_bars:
            raise ValueError(f"step of {self.step_bars} bars differs from the test span of "
                             f"{self.test_bars} bars: test spans must tile the evaluated period "
                             f"without overlap or holes, so the step equals the test span "
                             f"(set --test to retrain more or less often)")

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (saved in the run's config for ``--resume``)."""
        return asdict(self)


@dataclass(frozen=True)
class Fold:
    """One fold: training span (fit part | purge gap | validation tail), purge gap, test span."""

    index: int
    train: tuple[int, int]  # the whole training span, validation tail included
    fit: tuple[int, int]  # the part the networks, scaler and regime classifier are fitted on
    val: tuple[int, int]  # validation tail (early stopping)
    test: tuple[int, int]

    def bounds(self) -> SplitBounds:
        """Spans relative to the fold's own frame, which starts at ``train[0]``."""
        a = self.train[0]
        return SplitBounds((self.fit[0] - a, self.fit[1] - a), (self.val[0] - a, self.val[1] - a),
                           (self.test[0] - a, self.test[1] - a))


def make_folds(n_bars: int, spec: WalkForwardSpec, cfg: PipelineConfig) -> list[Fold]:
    """The fold plan. Pure: bars in, spans out; an impossible plan is a ValueError.

    Notes
    -----
    Each test span starts ``gap_bars + embargo_bars`` bars after its training span ends
    (``gap_bars`` >= the target horizon, so no training label reaches a test bar). Test spans
    tile [first test bar, n_bars) without overlap; the last may be shorter. Rolling folds train
    on the ``train_bars`` bars before the gap, expanding folds on everything before it.
    """
    gap = cfg.windows.gap_bars
    purge = gap + spec.embargo_bars
    if spec.test_bars > n_bars:
        raise ValueError(f"the test span ({spec.test_bars} bars) is longer than the data "
                         f"({n_bars} bars)")
    first = spec.train_bars + purge
    if first >= n_bars:
        raise ValueError(f"no fold fits: {n_bars} bars leave nothing to test after "
                         f"{spec.train_bars} training bars and a purge gap of {purge}; use "
                         f"more data or a shorter --train")
    n_val = int(spec.train_bars * cfg.windows.val_frac)
    history = max(group_warmup_bars(cfg.features), cfg.regimes.trend_bars) + cfg.windows.lookback
    n_fit = spec.train_bars - n_val - gap
    if n_val < 5 or n_fit - history < 20:
        raise ValueError(f"a training span of {spec.train_bars} bars is too short: it holds "
                         f"{n_fit} fitting bars (need more than {history + 20}: feature "
                         f"warm-up, trend window and lookback) and {n_val} validation bars "
                         f"(need 5); use a longer --train")
    folds = []
    start = first
    while start < n_bars:
        stop = min(start + spec.test_bars, n_bars)
        train_stop = start - purge
        train_start = 0 if spec.mode == "expanding" else train_stop - spec.train_bars
        val_start = train_stop - n_val
        folds.append(Fold(len(folds), (train_start, train_stop), (train_start, val_start - gap),
                          (val_start, train_stop), (start, stop)))
        start = stop
    return folds


def _fold_key(frame: pd.DataFrame, fold: Fold, cfg: PipelineConfig) -> str:
    """What a fold's models depend on: its training bars, its spans, the config, the version."""
    train = frame.iloc[fold.train[0]:fold.train[1]]
    blob = json.dumps({"train_data": fingerprint_frame(train), "fold": asdict(fold),
                       "config": cfg.training_dict(), "version": __version__,
                       **model_file_meta(cfg), **feature_key(train, cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _train_task(prep: PreparedWindows, cfg: PipelineConfig, name: str, regime: int | None,
                target_scale: float, period: list[str]) -> tuple[dict, dict]:
    # one torch thread per task: identical results for any --jobs or scheduler
    with one_torch_thread():
        return train_one(prep, cfg, name, regime, target_scale, period)


@dataclass
class FoldJob:
    """A fold being fitted: its prepared windows, fitted scaler/regimes and model plan."""

    fold: Fold
    key: str
    prep: PreparedWindows
    fit_info: tuple[Any, Any]  # (regime params, scaler)
    plan: dict[str, int | None]
    fallbacks: dict[int, str]
    period: list[str]


def fold_frame(frame: pd.DataFrame, fold: Fold) -> pd.DataFrame:
    """The bars a fold sees: its training span through the end of its test span."""
    return frame.iloc[fold.train[0]:fold.test[1]]


def _prepare_fold(frame: pd.DataFrame, fold: Fold, cfg: PipelineConfig) -> FoldJob:
    sub = fold_frame(frame, fold)
    prep, regime_params, scaler = prepare_windows(sub, cfg, fold.bounds())
    plan, fallbacks = plan_models(prep, cfg)
    period = [str(frame.index[fold.fit[0]]), str(frame.index[fold.fit[1] - 1])]
    return FoldJob(fold, _fold_key(frame, fold, cfg), prep, (regime_params, scaler), plan,
                   fallbacks, period)


def load_fold(fold_dir: Path, key: str, cfg: PipelineConfig) -> Forecaster | None:
    """A fold's saved bundle when complete, valid and made for this key (with the config's
    no-skill policy); else None."""
    manifest = read_manifest(fold_dir)
    if manifest is None or manifest.get("fold_key") != key:
        return None
    try:
        return load_forecaster(fold_dir, cfg.strategy.no_skill, cfg.strategy.skill_p)
    except ArtifactError as exc:
        logger.warning("%s: saved fold unusable (%s); training it again", fold_dir, exc)
        return None


def _save_fold(job: FoldJob, cfg: PipelineConfig, states: dict, metas: dict,
               fold_dir: Path) -> Forecaster:
    regime_params, scaler = job.fit_info
    fc = assemble_forecaster(cfg, scaler, regime_params, job.plan, job.fallbacks, states, metas,
                             job.prep.columns, job.prep.bar_ms)
    fc.info = {"fold_key": job.key, "fold": asdict(job.fold), "train_period": job.period,
               "fallbacks": {REGIME_LABELS[r]: why for r, why in job.fallbacks.items()},
               "library_version": __version__}
    staged = staging_dir(fold_dir)
    fc.save(staged, metas)
    replace_dir(staged, fold_dir)
    return fc


# progress(fold index, model name) after each finished task; total tasks are given up front
TaskProgress = Callable[[int, str], None]


def fit_folds(frame: pd.DataFrame, folds: list[Fold], cfg: PipelineConfig, folds_dir: Path,
              jobs: int = 1, scheduler: str | None = None,
              start_progress: Callable[[int, int], TaskProgress] | None = None,
              fold_cfgs: dict[int, PipelineConfig] | None = None,
              ) -> tuple[dict[int, Forecaster], dict[int, dict[int, int]]]:
    """Fit every fold (scaler, regimes, one network per regime) or reuse its saved bundle.

    Parameters
    ----------
    fold_cfgs
        A fold's own config (tuned on its training span) in place of ``cfg``.
    jobs
        joblib worker processes on this machine; ignored with ``scheduler``.
    scheduler
        Address of an existing Dask distributed scheduler: the same tasks run there through
        joblib's dask backend.
    start_progress
        Called once with (tasks to run, folds reused); returns the per-task callback.

    Returns
    -------
    The fitted forecaster of each fold, and each fold's training windows per regime.

    Notes
    -----
    Each fold sees only its own training span when fitting. A fold's bundle is written (whole,
    atomically) as soon as all its models are trained, so an interrupted run resumes with the
    folds it finished.
    """
    return fit_folds_seeds(frame, folds, [cfg], [folds_dir], jobs, scheduler, start_progress,
                           fold_cfgs)[0]


def _seeded(cfg: PipelineConfig, seed: int) -> PipelineConfig:
    return cfg if cfg.train.seed == seed else replace(cfg, train=replace(cfg.train, seed=seed))


def fit_folds_seeds(frame: pd.DataFrame, folds: list[Fold], cfgs: list[PipelineConfig],
                    folds_dirs: list[Path], jobs: int = 1, scheduler: str | None = None,
                    start_progress: Callable[[int, int], TaskProgress] | None = None,
                    fold_cfgs: dict[int, PipelineConfig] | None = None,
                    ) -> list[tuple[dict[int, Forecaster], dict[int, dict[int, int]]]]:
    """:func:`fit_folds` for several configs at once (one per seed), each into its own folder;
    the fold x regime tasks of every seed share one pool of ``jobs`` workers. A fold's tuned
    config (``fold_cfgs``) replaces the seed's config there, keeping the seed's seed."""
    done: list[dict[int, Forecaster]] = [{} for _ in cfgs]
    windows: list[dict[int, dict[int, int]]] = [{} for _ in cfgs]
    pending: list[tuple[int, FoldJob]] = []
    # (seed index, fold index) -> the config that fold trains with for that seed
    cfg_of = {(s, fold.index): _seeded((fold_cfgs or {}).get(fold.index, cfg), cfg.train.seed)
              for s, cfg in enumerate(cfgs) for fold in folds}
    for s, folds_dir in enumerate(folds_dirs):
        for fold in folds:
            fcfg = cfg_of[(s, fold.index)]
            job = _prepare_fold(frame, fold, fcfg)
            train_regimes = job.prep.regimes[job.prep.ends["train"]]
            windows[s][fold.index] = {r: int((train_regimes == r).sum()) for r in range(3)}
            saved = load_fold(folds_dir / f"fold_{fold.index:03d}", job.key, fcfg)
            if saved is not None:
                done[s][fold.index] = saved
                continue
            for regime, why in job.fallbacks.items():
                logger.warning("fold %d, regime %s: %s; it uses the pooled model", fold.index,
                               REGIME_LABELS[regime], why)
            pending.append((s, job))
    tasks = [(s, job, name, regime) for s, job in pending for name, regime in job.plan.items()]
    tick = start_progress(len(tasks), sum(len(d) for d in done)) if start_progress else None
    if not tasks:
        return list(zip(done, windows))
    from joblib import Parallel, delayed, parallel_config

    with contextlib.ExitStack() as stack:
        if scheduler:
            stack.enter_context(dask_client(scheduler))
            stack.enter_context(parallel_config(backend="dask"))  # needs the client first
        runner = Parallel(n_jobs=-1 if scheduler else jobs, return_as="generator")
        results = runner(delayed(_train_task)(job.prep, cfg_of[(s, job.fold.index)], name, regime,
                                              job.fit_info[1].target_scale, job.period)
                         for s, job, name, regime in tasks)
        states: dict[tuple[int, int], dict] = {}
        metas: dict[tuple[int, int], dict] = {}
        for (s, job, name, _), (state, meta) in zip(tasks, results):
            k = (s, job.fold.index)
            states.setdefault(k, {})[name] = state
            metas.setdefault(k, {})[name] = meta
            if tick:
                tick(job.fold.index, name)
            if len(states[k]) == len(job.plan):
                done[s][k[1]] = _save_fold(job, cfg_of[k], states.pop(k), metas.pop(k),
                                           folds_dirs[s] / f"fold_{k[1]:03d}")
    return list(zip(done, windows))


def parallel_map(fn: Callable[..., Any], calls: list[tuple], jobs: int = 1,
                 scheduler: str | None = None) -> Iterator[Any]:
    """``fn(*args)`` for each ``args`` of ``calls``, yielded in order as each is done: in this
    process with ``jobs`` 1 and no scheduler, else in ``jobs`` joblib worker processes or on the
    Dask scheduler at ``scheduler`` (joblib's dask backend, as the fold tasks above)."""
    if jobs == 1 and not scheduler:
        for args in calls:
            yield fn(*args)
        return
    from joblib import Parallel, delayed, parallel_config

    with contextlib.ExitStack() as stack:
        if scheduler:
            stack.enter_context(dask_client(scheduler))
            stack.enter_context(parallel_config(backend="dask"))  # needs the client first
        runner = Parallel(n_jobs=-1 if scheduler else jobs, return_as="generator")
        yield from runner(delayed(fn)(*args) for args in calls)


@contextlib.contextmanager
def dask_client(address: str | None) -> Iterator[None]:
    """A Dask distributed client on ``address`` for the block (joblib's dask backend needs
    it); nothing when ``address`` is None. An unreachable scheduler is a one-line ValueError."""
    if address is None:
        yield
        return
    try:
        from dask.distributed import Client
    except ImportError:
        raise ValueError("--scheduler needs dask.distributed: pip install 'distributed'") from None
    try:
        client = Client(address, timeout="20s")
    except OSError as exc:
        raise ValueError(f"--scheduler {address}: cannot reach a Dask scheduler there "
                         f"({exc})") from None
    try:
        yield
    finally:
        client.close()


def stitch_forecasts(frame: pd.DataFrame, folds: list[Fold],
                     forecasters: dict[int, Forecaster]) -> pd.DataFrame:
    """Each test bar's regime, model and forecast, from the models of the fold that owns it.

    The window of a fold's first test bar comes from the bars before it (the fold's training
    span and purge gap), never from later bars: forecasts are causal.
    """
    parts = []
    for fold in folds:
        sub = fold_frame(frame, fold)
        fc = forecasters[fold.index].forecast_frame(sub)
        part = fc.iloc[fold.test[0] - fold.train[0]:].copy()
        part.insert(0, "fold", fold.index)
        parts.append(part)
    return pd.concat(parts)
