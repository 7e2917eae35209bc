"""Search hyperparameters with Optuna on the training span (scored on its validation tail):
one study for the pooled network (it also picks the shared lookback), then one per regime.

The test part is never read. Writes reports/tune_<DATASET>_<tf>_<study>/ with best_config.json
(pass it to --config of every runner), trials.csv, index.html and study.json.

Examples
--------
    python runners/tune.py --symbol BTCUSDT --trials 60
    python runners/backtest.py --symbol BTCUSDT \
        --config reports/tune_BTCUSDT_4h_<study>/best_config.json
    python runners/tune.py --symbol BTCUSDT --trials 200 --study btc-wide \\
        --storage postgresql://user@db-host/optuna     # the same line on every worker machine
"""
from __future__ import annotations

import argparse
import shlex
import sys

from bt_lstm.cli.common import (
    add_data_args,
    add_output_args,
    add_pipeline_args,
    build_config,
    load_dataset,
    make_parser,
    run_cli,
    setup_logging,
)


def add_tune_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("tuning")
    g.add_argument("--trials", type=int, default=60, metavar="N",
                   help="trials per study (pooled, then one per regime), all workers "
                        "together (default 60); a study that has them already runs none")
    g.add_argument("--study", metavar="NAME",
                   help="study name: the same name and storage resume or join the studies "
                        "NAME-pooled, NAME-bearish, NAME-sideways, NAME-bullish (default: a "
                        "hash of data, config, space and seed)")
    g.add_argument("--storage", metavar="URL",
                   help="postgresql://user@host/db for workers on several machines (RDB with "
                        "heartbeats); default: a journal file in the study folder")
    g.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="worker processes on this machine (default 1; only one worker is "
                        "reproducible)")
    g.add_argument("--space", metavar="FILE",
                   help="JSON search space replacing the default (see README: Tuning)")
    g.add_argument("--no-prune", action="store_true",
                   help="train every trial to the end (default: median pruning per epoch)")
    g.add_argument("--heartbeat", type=int, default=10, metavar="S",
                   help="database storage: heartbeat every S seconds; a trial silent for 2*S "
                        "is marked failed (default 10)")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__, prog)
    add_data_args(parser)
    add_pipeline_args(parser)
    add_tune_args(parser)
    out = parser.add_argument_group("output")
    add_output_args(out, reports="where the study folder is written (default: reports)")
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.trials < 1 or args.jobs < 1 or args.heartbeat < 1:
        raise ValueError("--trials, --jobs and --heartbeat must be >= 1")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet)

    def job() -> int:
        from pathlib import Path

        from bt_lstm.jobs.tune import run_tune
        from bt_lstm.research.search_space import load_space

        _check(args)
        space = load_space(args.space)
        cfg = build_config(args)
        frame, dataset, timeframe = load_dataset(args, cfg)
        bar = TrialProgress(args.trials * 4, disable=args.quiet)  # up to 4 studies
        with _interrupt() as stop:
            try:
                result = run_tune(frame, dataset, timeframe, cfg, space, n_trials=args.trials,
                                  reports_dir=Path(args.reports_dir), study=args.study,
                                  storage=args.storage, jobs=args.jobs,
                                  prune=not args.no_prune, threshold=args.threshold,
                                  heartbeat_s=args.heartbeat, stop=stop, progress=bar.update,
                                  prepare=lambda spec: bar.describe(spec.study_name))
            finally:
                bar.close()
        s = result.study
        for key, one in s["studies"].items():
            b = one["best"] or {}
            print(f"study {one['study']}: {one['n_complete']} complete, {one['n_pruned']} "
                  f"pruned, {one['n_failed']} failed; best trial {b.get('number')}: "
                  f"validation MSE ratio {b.get('value')}, {b.get('params')}")
        print(f"{s['n_trials']} trials in all ({s['storage']})")
        if result.best_config is not None:
            b = s["best"]
            print(f"tuned networks together: validation MSE ratio {b['value']:.4f}, "
                  f"threshold {b['threshold']:.4g}, validation Sharpe {b['val_sharpe']:.2f}")
            print(f"report:  {result.folder}\nnext:    python runners/backtest.py "
                  f"{_data_flags(args)}--config {result.folder / 'best_config.json'}")
        if result.interrupted:
            print(f"interrupted: the running trial finished; resume with:\n  "
                  f"{_resume_line(argv, s['study'])}", file=sys.stderr)
            return 130
        return 0

    return run_cli(job)


def _data_flags(args: argparse.Namespace) -> str:
    parts = [f"--{k.replace('_', '-')} {shlex.quote(str(getattr(args, k)))}"
             for k in ("symbol", "csv", "timeframe", "data_dir") if getattr(args, k)]
    return " ".join(parts) + (" " if parts else "")


def _resume_line(argv: list[str] | None, study: str) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--study" not in argv:
        argv += ["--study", study]
    return "python runners/tune.py " + " ".join(shlex.quote(a) for a in argv)


def _interrupt():
    from bt_lstm.research.tuning import stop_on_interrupt

    return stop_on_interrupt()


class TrialProgress:
    """A tqdm bar over trials with the best value so far, on stderr."""

    def __init__(self, total: int, disable: bool = False) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="tune", unit="trial", disable=disable,
                        file=sys.stderr)

    def describe(self, study: str) -> None:
        self.bar.set_description(f"tune {study}")

    def update(self, done: int, best: float | None) -> None:
        self.bar.total = max(self.bar.total, done)
        self.bar.n = done
        if best is not None:
            self.bar.set_postfix(best=f"{best:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
