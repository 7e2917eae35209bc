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

from bt_lstm.cli.args import DATA, add_group, add_pipeline_groups, build_config
from bt_lstm.cli.common import load_data, make_parser, run_cli
from bt_lstm.cli.progress import people

TUNING = ("trials", "study", "storage", "jobs", "space", "no_prune", "heartbeat")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm tune`` (``prog``: the name its usage lines show; default
    the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_group(parser, "data (default: the bundled synthetic SAMPLE market)", *DATA)
    add_pipeline_groups(parser)
    add_group(parser, "tuning", *TUNING)
    add_group(parser, "output", "reports_dir", "quiet")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm tune`` with ``argv`` (default: the process's arguments); return the exit
    code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, lambda args: job(args, argv))


def job(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run the Optuna studies (pooled, then each regime) on the training span and write the study
    folder with ``best_config.json``; ``argv`` goes into the resume hint printed on Ctrl-C."""
    from pathlib import Path

    from bt_lstm.cli.progress import TrialProgress
    from bt_lstm.jobs.tune import run_tune
    from bt_lstm.research.search_space import load_space
    from bt_lstm.research.tuning import stop_on_interrupt

    space = load_space(args.space)
    cfg = build_config(args)
    frame, dataset, timeframe = load_data(args, cfg)
    bar = TrialProgress(args.trials * 4, disable=args.quiet)  # up to 4 studies
    with stop_on_interrupt() as stop:
        try:
            result = run_tune(frame, dataset, timeframe, cfg, space, n_trials=args.trials,
                              reports_dir=Path(args.reports_dir), study=args.study,
                              storage=args.storage, jobs=args.jobs,
                              prune=not args.no_prune, threshold=args.threshold,
                              heartbeat_s=args.heartbeat, stop=stop, progress=bar.update,
                              prepare=lambda spec: bar.describe(spec.study_name))
        finally:
            bar.close()
    print_studies(result.study)
    if result.best_config is not None:
        b = result.study["best"]
        print(f"tuned networks together: validation MSE ratio {people(b['value'])}, "
              f"threshold {people(b['threshold'])}, validation Sharpe "
              f"{people(b['val_sharpe'])}")
        print(f"report:  {result.folder}\nnext:    python runners/backtest.py "
              f"{_data_flags(args)}--config {result.folder / 'best_config.json'}")
    if result.interrupted:
        print(f"interrupted: the running trial finished; resume with:\n  "
              f"{_resume_line(argv, result.study['study'])}", file=sys.stderr)
        return 130
    return 0


def print_studies(s: dict) -> None:
    """One line per study: counts, the best trial's score and parameters (4 digits)."""
    for one in s["studies"].values():
        b = one["best"] or {}
        params = ", ".join(f"{k} {people(v)}" for k, v in (b.get("params") or {}).items())
        best = (f"best trial {b.get('number')}: validation MSE ratio {people(b.get('value'))}"
                f" ({params})" if b else "no complete trial")
        print(f"study {one['study']}: {one['n_complete']} complete, {one['n_pruned']} "
              f"pruned, {one['n_failed']} failed; {best}")
    print(f"{s['n_trials']} trials in all ({s['storage']})")


def _data_flags(args: argparse.Namespace) -> str:
    parts = [f"--{k.replace('_', '-')} {shlex.quote(str(getattr(args, k)))}"
             for k in ("symbol", "csv", "timeframe", "data_dir") if getattr(args, k)]
    return " ".join(parts) + (" " if parts else "")


def _resume_line(argv: list[str] | None, study: str) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--study" not in argv:
        argv += ["--study", study]
    return "python runners/tune.py " + " ".join(shlex.quote(a) for a in argv)


if __name__ == "__main__":
    sys.exit(main())
