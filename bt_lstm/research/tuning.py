"""Hyperparameter search with Optuna: storage, study, objective, workers, and read-outs.

The one home of Optuna (and, through its charts, plotly). One study per network: a trial trains
that regime's network (or the pooled one) on the training part and is scored on the same
regime's validation windows after the purge gap; the caller hands over candles that end before
the test part, so no trial can read it.
Legend: T bars, F features, L lookback, V validation window ends.
"""
from __future__ import annotations

import contextlib
import hashlib
import html
import logging
import math
import multiprocessing
import os
import platform
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bt_lstm.config import PipelineConfig
from bt_lstm.data.files import atomic_write_text
from bt_lstm.models.nets import model_hparams
from bt_lstm.models.training import one_torch_thread, predict_windows
from bt_lstm.research.pipeline import PreparedWindows, prepare_windows, train_one
from bt_lstm.research.search_space import apply_params
from bt_lstm.research.selection import choose_threshold, mse_ratio
from bt_lstm.research.tuned_fit import validation_realised
from bt_lstm.signals.regimes import REGIME_LABELS
from bt_lstm.signals.windows import SplitBounds, gather_windows

logger = logging.getLogger(__name__)

JOURNAL = "journal:"  # storage prefix of a journal file
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# progress(n_finished, best_value or None)
ProgressFn = Callable[[int, "float | None"], None]


@dataclass(frozen=True)
class TuneSpec:
    """Everything a worker needs (picklable: workers are spawned processes)."""

    frame: Any  # pd.DataFrame of the bars before the test part only
    bounds: SplitBounds  # train and validation parts inside ``frame``
    cfg: PipelineConfig  # base config; trials overwrite the searched fields
    space: dict[str, dict[str, Any]]
    study_name: str
    storage: str  # "journal:<path>" or a postgresql:// URL
    n_trials: int
    seed: int
    prune: bool = True
    threshold_floor: float = 0.003
    heartbeat_s: int = 10
    regime: int | None = None  # the network this study tunes: a regime's, or None (pooled)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    head, sep, tail = url.partition("://")
    if sep and "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}://{user}:***@{tail.split('@', 1)[1]}"
    return url


def open_storage(url: str, heartbeat_s: int = 10) -> Any:
    """A journal file (``journal:<path>``) or PostgreSQL RDB storage with heartbeats.

    Raises
    ------
    ValueError
        An unknown or SQLite URL, a missing driver, or a database that does not answer.
    """
    if url.startswith(JOURNAL):
        with _quiet():
            return JournalStorage(JournalFileBackend(url[len(JOURNAL):]))
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    shown = mask_url(url)
    if scheme.startswith("sqlite"):
        raise ValueError(f"--storage {shown}: SQLite is not supported (it locks with parallel "
                         f"workers); leave --storage out for the journal file, or use "
                         f"postgresql://user@host/db")
    if scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"--storage {shown}: unknown storage URL; use postgresql://user@host/db "
                         f"(or leave --storage out for a journal file in the study folder)")
    if "+" not in scheme:  # psycopg 3 (installed with bt-lstm), whatever SQLAlchemy's default
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    for attempt in range(CREATE_TRIES):
        try:
            with _quiet():
                return RDBStorage(url, engine_kwargs={"connect_args": {"connect_timeout": 5}},
                                  heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s)
        except Exception as exc:  # sqlalchemy / driver errors: one line for the user
            if attempt + 1 < CREATE_TRIES and _creating_race(exc):
                # workers started together on a database without Optuna's tables: one
                # creates them, the others' CREATE collides; the tables are there on retry
                logger.info("--storage %s: tables created by another worker meanwhile; "
                            "opening again", shown)
                time.sleep(0.2 * (attempt + 1))
                continue
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"--storage {shown}: cannot open the database ({first})") from None
    raise AssertionError("unreachable")


CREATE_TRIES = 5


def _creating_race(exc: Exception) -> bool:
    """A CREATE TABLE / TYPE / INDEX that collided with another worker's."""
    text = str(exc)
    return "UniqueViolation" in text or "already exists" in text or "DuplicateTable" in text


def close_storage(storage: Any) -> None:
    """Close an RDB storage's connections (journal files need nothing)."""
    if isinstance(storage, RDBStorage):
        storage.remove_session()
        storage.engine.dispose()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna flags storages, heartbeats and stale-trial checks as experimental."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def worker_seed(seed: int, worker: int, shared_database: bool) -> int:
    """Worker k of one machine gets seed + k. On a shared database other machines may join
    with the same command line, so the host and process id are mixed in there."""
    if not shared_database:
        return seed + worker
    salt = hashlib.sha256(f"{platform.node()}:{os.getpid()}".encode()).digest()
    return (seed + worker + int.from_bytes(salt[:4], "big")) % 2**31


def make_study(spec: TuneSpec, storage: Any, worker: int = 0) -> optuna.Study:
    """Create the study once or load it (every worker calls this; load_if_exists)."""
    shared = isinstance(storage, RDBStorage)
    sampler = optuna.samplers.TPESampler(seed=worker_seed(spec.seed, worker, shared))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
              if spec.prune else optuna.pruners.NopPruner())
    with _quiet():
        return optuna.create_study(storage=storage, study_name=spec.study_name,
                                   direction="minimize", sampler=sampler, pruner=pruner,
                                   load_if_exists=True)


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Draw one trial's parameters from ``space`` (categorical, int or float, log or linear)."""
    out: dict[str, Any] = {}
    for name, s in space.items():
        if s["type"] == "categorical":
            out[name] = trial.suggest_categorical(name, s["choices"])
        elif s["type"] == "int":
            out[name] = trial.suggest_int(name, s["low"], s["high"], step=s.get("step", 1),
                                          log=s["log"])
        else:
            out[name] = trial.suggest_float(name, s["low"], s["high"], step=s.get("step"),
                                            log=s["log"])
    return out


def model_name(regime: int | None) -> str:
    """The bundle's name of the network a study tunes."""
    return "pooled" if regime is None else f"regime_{regime}"


class Objective:
    """Train the study's one network with a trial's settings: the regime's model on that
    regime's training windows (or the pooled model on all of them); return its validation MSE
    ratio on the same regime's validation windows."""

    def __init__(self, spec: TuneSpec) -> None:
        self.spec = spec
        self._prepared: dict[tuple, tuple] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        """Optuna's objective: the trial's validation MSE ratio; a failure is recorded on the
        trial as ``fail_reason`` and re-raised (the study goes on), a prune passes through."""
        params = suggest(trial, self.spec.space)
        try:
            return self.evaluate(trial, apply_params(self.spec.cfg, params))
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded on the trial; the study goes on (catch=Exception)
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
            raise

    def _prepare(self, cfg: PipelineConfig) -> tuple[PreparedWindows, Any]:
        key = (cfg.windows.lookback,)  # the only searched field that changes the windows
        if key not in self._prepared:
            prep, _, scaler = prepare_windows(self.spec.frame, cfg, self.spec.bounds)
            self._prepared[key] = (prep, scaler)  # a few MB at most: T x F per lookback
        return self._prepared[key]

    def evaluate(self, trial: optuna.Trial, cfg: PipelineConfig) -> float:
        """Train the study's network with ``cfg`` and score it.

        Returns the network's validation MSE divided by the zero forecast's on its validation
        windows (below 1 beats "no change"). Also records, as user attributes, the after-cost
        Sharpe of the threshold chosen on those validation bars (flat elsewhere), whose spread
        over trials deflates the final Sharpe. Only training and validation bars are read: the
        test part never reaches a trial.

        Raises
        ------
        FloatingPointError
            When the ratio is not finite (a NaN loss)."""
        spec, b, regime = self.spec, self.spec.bounds, self.spec.regime
        prep, scaler = self._prepare(cfg)
        name = model_name(regime)
        period = [str(spec.frame.index[b.train[0]]), str(spec.frame.index[b.train[1] - 1])]
        report = self._reporter(trial, name, prep, regime)
        state, meta = train_one(prep, cfg, name, regime, scaler.target_scale, period, report)
        ends = prep.ends["val"]  # (V,)
        if regime is not None:
            ends = ends[prep.regimes[ends] == regime]
        x = gather_windows(prep.scaled, ends, cfg.windows.lookback)  # (v, L, F)
        pred = predict_windows(cfg.model.arch, model_hparams(cfg), state, x,
                               cfg.model.model_file)  # (v,)
        score = mse_ratio(pred, prep.y[ends].astype(float))
        if not math.isfinite(score):
            raise FloatingPointError(f"validation MSE ratio is {score}")
        # The rule on this network's validation bars only (flat elsewhere): the trial's
        # Sharpe, whose spread over all trials deflates the final Sharpe.
        forecast = np.full(b.val[1] - b.val[0], np.nan)
        forecast[ends - b.val[0]] = pred * scaler.target_scale
        choice = choose_threshold(forecast, validation_realised(prep, b, scaler),
                                  spec.frame.index[b.val[0]:b.val[1]], cfg.strategy,
                                  spec.threshold_floor)
        trial.set_user_attr("per_model", {name: {
            "regimes": [REGIME_LABELS[r] for r in ([regime] if regime is not None else
                                                   range(3))],
            "n_val": len(ends), "best_epoch": meta["best_epoch"], "mse_ratio": score}})
        trial.set_user_attr("val_sharpe", choice.sharpe)
        trial.set_user_attr("threshold", choice.threshold)
        return score

    def _reporter(self, trial: optuna.Trial, name: str, prep: PreparedWindows,
                  regime: int | None) -> Callable:
        """Epoch callback: report the network's validation MSE ratio; prune when told to."""
        _, yv = prep.windows("val", regime)
        y2 = float(np.mean(np.square(yv))) or 1.0

        def report(epoch: int, n_epochs: int, train_loss: float, val_loss: float,
                   best: float) -> None:
            trial.report(val_loss / y2, epoch)
            if self.spec.prune and trial.should_prune():
                trial.set_user_attr("pruned_at", f"{name} epoch {epoch}")
                trial.set_user_attr("pruned_step", epoch)
                raise optuna.TrialPruned(f"{name} epoch {epoch}")
        return report


class StopFlag:
    """Set by the first Ctrl-C (SIGINT): finish the running trial, then stop."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        """Whether a stop was asked for (the optimisation loop's callback checks it)."""
        return self.set


@contextlib.contextmanager
def stop_on_interrupt(escalate: bool = True) -> Iterator[StopFlag]:
    """First SIGINT sets the flag; with ``escalate`` a second one interrupts at once
    (KeyboardInterrupt). Spawned workers do not escalate: a terminal's Ctrl-C reaches them
    and the parent, which forwards it, so they may see two."""
    flag = StopFlag()
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:
        previous = None

    def handler(signum: int, frame: Any) -> None:
        flag.set = True
        if escalate:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C interrupts as usual
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def _all_done(study: optuna.Study, storage: Any, n_trials: int) -> bool:
    """Enough trials started. On a database, also wait for other workers' running trials:
    the heartbeat marks a killed worker's trial FAIL after the grace period."""
    trials = study.get_trials(deepcopy=False)
    if len(trials) < n_trials:
        return False
    if not isinstance(storage, RDBStorage) or storage.get_heartbeat_interval() is None:
        return True
    with _quiet():
        optuna.storages.fail_stale_trials(study)
    if any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        time.sleep(min(2.0, storage.get_heartbeat_interval() or 1))
        return False
    return True


def run_worker(spec: TuneSpec, worker: int = 0, stop: Callable[[], bool] | None = None,
               progress: ProgressFn | None = None, quota: int | None = None) -> None:
    """Run trials until the study holds ``spec.n_trials`` (all workers together), this worker
    has run ``quota`` (its share on this machine, so local workers never overshoot) or
    ``stop``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec.storage, spec.heartbeat_s)
    try:
        study = make_study(spec, storage, worker)
        objective = Objective(spec)
        ran = 0
        with one_torch_thread(), _quiet():
            while not (stop and stop()) and not _all_done(study, storage, spec.n_trials):
                if quota is not None and ran >= quota:
                    break
                if len(study.get_trials(deepcopy=False)) >= spec.n_trials:
                    continue  # database: waiting for other workers' running trials
                study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
                ran += 1
                if progress is not None:
                    progress(*finished_and_best(study))
    finally:
        close_storage(storage)


def finished_and_best(study: optuna.Study) -> tuple[int, float | None]:
    """Finished trials (complete, pruned or failed) of ``study`` and the best complete value
    (None before the first)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return len(trials), (min(values) if values else None)


def _worker_main(spec: TuneSpec, worker: int, quota: int) -> None:
    """Entry point of a spawned worker process (quiet logs; Ctrl-C ends after its trial)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    with stop_on_interrupt(escalate=False) as stop:
        run_worker(spec, worker, stop, quota=quota)


def run_study(spec: TuneSpec, jobs: int = 1, stop: Callable[[], bool] | None = None,
              progress: ProgressFn | None = None) -> None:
    """Create the study once, then run ``jobs`` workers: in this process for one, else as
    spawned processes while this one reports progress from the storage."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec.storage, spec.heartbeat_s)
    try:
        study = make_study(spec, storage)
        if jobs == 1:
            if progress is not None:
                progress(*finished_and_best(study))
            run_worker(spec, 0, stop, progress)
            return
        left = max(spec.n_trials - len(study.get_trials(deepcopy=False)), 0)
        quotas = [left // jobs + (k < left % jobs) for k in range(jobs)]
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_main, args=(spec, k, quotas[k]), daemon=False)
                 for k in range(jobs)]
        for p in procs:
            p.start()
        try:
            _watch(procs, study, stop, progress)
        finally:
            for p in procs:  # only after a second Ctrl-C: stop at once
                if p.is_alive():
                    p.terminate()
                    p.join()
        bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
        if bad and not (stop and stop()):
            logger.warning("%d worker process(es) ended with exit codes %s", len(bad), bad)
        if progress is not None:
            progress(*finished_and_best(study))
    finally:
        close_storage(storage)


def _watch(procs: list, study: optuna.Study, stop: Callable[[], bool] | None,
           progress: ProgressFn | None) -> None:
    """Report progress until every worker exits; pass a Ctrl-C on to them once."""
    forwarded = False
    while any(p.is_alive() for p in procs):
        if stop is not None and stop() and not forwarded:
            for p in procs:
                if p.is_alive() and p.pid is not None:
                    os.kill(p.pid, signal.SIGINT)
            forwarded = True
        if progress is not None:
            progress(*finished_and_best(study))
        time.sleep(0.5)


def read_study(spec: TuneSpec, charts: bool = True) -> dict[str, Any]:
    """The finished study as plain data: trials, counts, best trial, chart HTML."""
    storage = open_storage(spec.storage, spec.heartbeat_s)
    try:
        with _quiet():
            study = optuna.load_study(study_name=spec.study_name, storage=storage)
        trials = [trial_record(t) for t in study.get_trials(deepcopy=False)]
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        best = min(done, key=lambda t: (t.value, t.number)) if done else None
        return {"trials": trials, "best": trial_record(best) if best else None,
                "charts": chart_html(study) if done and charts else [],
                "sampler": type(study.sampler).__name__,
                "pruner": "MedianPruner(n_startup_trials=5, n_warmup_steps=2)" if spec.prune
                else "none"}
    finally:
        close_storage(storage)


def trial_record(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One row of ``trials.csv``: number, state, value, parameters, duration and the trial's user
    attributes."""
    dur = t.duration.total_seconds() if t.duration is not None else None
    return {"number": t.number, "state": t.state.name, "value": t.value,
            "params": dict(t.params), "duration_s": dur,
            "pruned_step": t.user_attrs.get("pruned_step"),
            "pruned_at": t.user_attrs.get("pruned_at"),
            "val_sharpe": t.user_attrs.get("val_sharpe"),
            "threshold": t.user_attrs.get("threshold"),
            "fail_reason": t.user_attrs.get("fail_reason") or t.system_attrs.get("fail_reason"),
            "per_model": t.user_attrs.get("per_model", {})}


PLOTLY_JS = "plotly.min.js"  # written once into a study folder; the page references it
IMPORTANCE_MIN_TRIALS = 20  # fewer completed trials: importances are mostly noise


def chart_html(study: optuna.Study) -> list[tuple[str, str]]:
    """Optuna's plotly charts as HTML fragments without plotly.js (the page loads
    ``plotly.min.js`` from its folder once: see :func:`write_plotly_js`)."""
    from optuna import visualization as vis

    n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    caveat = (f" (only {n_done} completed trials: with fewer than {IMPORTANCE_MIN_TRIALS} the "
              f"importances are mostly noise)" if n_done < IMPORTANCE_MIN_TRIALS else "")
    charts = [("Optimisation history", vis.plot_optimization_history),
              ("Parameter importances" + caveat, vis.plot_param_importances),
              ("Parallel coordinates", vis.plot_parallel_coordinate),
              ("Slice", vis.plot_slice),
              ("Intermediate values (pruning)", vis.plot_intermediate_values)]
    out = []
    for title, plot in charts:
        try:
            with _quiet(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = plot(study)
            out.append((title, fig.to_html(full_html=False, include_plotlyjs=False)))
        except Exception as exc:  # e.g. importances need two completed trials
            out.append((title, f"<p>not available: {html.escape(str(exc))}</p>"))
    return out


def write_plotly_js(folder: Path) -> Path:
    """``folder/plotly.min.js`` (the installed plotly's, for offline pages), written once."""
    from plotly.offline import get_plotlyjs

    path = Path(folder) / PLOTLY_JS
    if not path.is_file():
        atomic_write_text(path, get_plotlyjs())
    return path
