"""Walk-forward: retrain on a schedule, trade each test span only with models fitted before it.

Each fold fits the scaler, the regime classifier and one network per regime on its own training
span (a validation tail inside it), skips a purge gap, and forecasts its test span; the test
spans tile the evaluated period and are backtested as one stitched out-of-sample run.

Examples
--------
    python runners/walk_forward.py --symbol BTCUSDT --train 365d --test 90d --jobs 2
    python runners/walk_forward.py --csv path.csv --train-bars 2190 --test-bars 540 \\
        --start 2019-01-01
    python runners/walk_forward.py --resume wf_BTCUSDT_4h/20261123-150000
    python runners/walk_forward.py --symbols BTCUSDT,ETHUSDT --train 365d --test 90d
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_lstm.cli.args import (
    DATA,
    DOWNLOAD,
    MARKETS,
    SEEDS,
    add_group,
    add_pipeline_groups,
    build_config,
    config_flags,
    given,
)
from bt_lstm.cli.common import load_data, make_parser, print_luck, run_cli

FOLDS = ("train", "test", "step", "train_bars", "test_bars", "mode", "embargo", "start", "end")
# a resumed run takes all of these from its config.json
RESUME_FIXED = (*DATA, *MARKETS, *DOWNLOAD, *FOLDS, *SEEDS, "config", "tune_trials", "space")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm walk-forward`` (``prog``: the name its usage lines show;
    default the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_group(parser, "data (default: the bundled synthetic SAMPLE market)", *DATA,
              csv={"append": True})
    add_group(parser, "several markets (--csv repeated or --symbols; one market runs alone)",
              *MARKETS)
    add_group(parser, "download (with --symbol)", *DOWNLOAD)
    add_group(parser, "folds", *FOLDS)
    add_pipeline_groups(parser)
    add_group(parser, "run", *SEEDS, "jobs", "scheduler", "run_id", "resume", "force",
              "tune_trials", "space", "reports_dir", "no_tearsheet", "quiet")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm walk-forward`` with ``argv`` (default: the process's arguments); return the
    exit code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    parser = build_parser(prog)
    return run_cli(parser, argv, lambda args: job(args, parser))


def _resume(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The interrupted run's settings; any data/fold/pipeline/tuning flag given is refused."""
    from bt_lstm.jobs.walk_forward import load_saved_run

    extra = given(args, parser, (*RESUME_FIXED, *config_flags()))
    if extra:
        raise ValueError(f"--resume takes the run's own settings; drop {', '.join(extra)}")
    saved = load_saved_run(Path(args.reports_dir) / args.resume)
    for key, value in saved.source.items():
        setattr(args, key, value)
    args.seeds, args.ensemble = saved.seeds, saved.ensemble
    return saved


def fold_spec(args: argparse.Namespace, bar):
    """The fold plan of the --train/--test/--step/--embargo/--mode flags (spans in bars)."""
    from bt_lstm.research.walkforward import WalkForwardSpec, parse_span

    if args.train and args.train_bars or args.test and args.test_bars:
        raise ValueError("give a span either as a duration (--train/--test) or in bars "
                         "(--train-bars/--test-bars), not both")
    train = args.train_bars or parse_span(args.train or "365d", bar, "--train")
    test = args.test_bars or parse_span(args.test or "90d", bar, "--test")
    step = parse_span(args.step, bar, "--step") if args.step else None
    embargo = 0 if str(args.embargo) == "0" else parse_span(args.embargo, bar, "--embargo")
    return WalkForwardSpec(train, test, step, args.mode, embargo)


def job(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Plan the folds, train each fold's models (in parallel, resumable) and backtest the
    stitched out-of-sample span; ``parser`` tells which flags were given, for ``--resume``."""
    from bt_lstm.cli.markets import several_markets, walk_forward_markets
    from bt_lstm.data.candles import infer_bar
    from bt_lstm.jobs.datasets import trim_dates
    from bt_lstm.jobs.runs import new_run_dir, run_id
    from bt_lstm.jobs.walk_forward import run_walk_forward
    from bt_lstm.research.search_space import load_space
    from strategies.lstm_strategy import RegimeLSTMStrategy

    saved = _resume(args, parser) if args.resume else None
    if saved is not None and saved.markets or saved is None and several_markets(args):
        return walk_forward_markets(args, parser, fold_spec, saved)
    tune_trials, tune_space = args.tune_trials, None
    if saved is not None:
        cfg, spec, run_dir = saved.cfg, saved.spec, saved.run_dir
        tune_trials, tune_space = saved.tune_trials, saved.tune_space
    else:
        tune_space = load_space(args.space) if tune_trials else None
        cfg = build_config(args)
    frame, dataset, timeframe = load_data(args, cfg, check_split=False)
    frame = trim_dates(frame, args.start, args.end)
    if not args.resume:
        spec = fold_spec(args, infer_bar(frame.index))
        run_dir = (Path(args.reports_dir) / args.run_id if args.run_id else
                   new_run_dir(Path(args.reports_dir) / f"wf_{dataset}_{timeframe}"))
    csv = args.csv[0] if isinstance(args.csv, list) else args.csv
    source = {"symbol": args.symbol, "csv": str(Path(csv).resolve()) if csv
              else None, "data_dir": args.data_dir, "timeframe": args.timeframe,
              "start": args.start, "end": args.end}
    from bt_lstm.cli.progress import FoldProgress

    progress = FoldProgress(args.quiet)
    try:
        result = run_walk_forward(frame, dataset, timeframe, cfg, spec, RegimeLSTMStrategy,
                                  run_dir, source, jobs=args.jobs, scheduler=args.scheduler,
                                  resume=bool(args.resume), tearsheet=not args.no_tearsheet,
                                  force=args.force, start_progress=progress.start,
                                  seeds=args.seeds, ensemble=args.ensemble,
                                  tune_trials=tune_trials, tune_space=tune_space,
                                  reports_root=Path(args.reports_dir))
    except KeyboardInterrupt:
        progress.close()
        kept = len(list((run_dir / "folds").glob("fold_*/manifest.json")))
        print(f"interrupted: {kept} finished folds are kept in {run_dir / 'folds'}; finish "
              f"the run with: python runners/walk_forward.py --resume "
              f"{run_id(run_dir, Path(args.reports_dir))}"
              + (f" --reports-dir {args.reports_dir}" if args.reports_dir != "reports"
                 else ""), file=sys.stderr)
        return 130
    finally:
        progress.close()
    print_result(result, spec, run_dir, Path(args.reports_dir))
    return 0


def print_result(result, spec, run_dir: Path, reports_root: Path) -> None:
    """The terminal report of a walk-forward run."""
    from bt_lstm.backtest.reports import format_summary
    from bt_lstm.jobs.runs import describe_files
    from bt_lstm.jobs.walk_forward import format_fold_table

    print(format_summary(result.metrics))
    print_luck(result.metrics)
    print(f"\n{len(result.folds)} folds ({spec.mode}, train {spec.train_bars} bars, test "
          f"{spec.test_bars} bars):")
    print(format_fold_table(result.fold_table))
    sk = result.metrics["skill"]
    print(f"\nskill guard: {sk['traded']} of {sk['fold_regime_models']} fold × regime models "
          f"traded, {sk['with_skill']} with validated skill (p ≤ {sk['skill_p']:g}); the "
          f"others: --no-skill {sk['policy']}")
    print(f"\nrun folder: {run_dir}")
    for line in describe_files(run_dir, reports_root):
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
