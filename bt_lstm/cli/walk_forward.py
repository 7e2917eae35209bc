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
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bt_lstm.cli.common import (
    _FLAG_FIELDS,
    add_data_args,
    add_download_args,
    add_output_args,
    add_pipeline_args,
    add_seed_args,
    build_config,
    load_dataset,
    make_parser,
    print_luck,
    run_cli,
    setup_logging,
    trim_dates,
)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__, prog)
    add_data_args(parser)
    add_download_args(parser)
    g = parser.add_argument_group("folds")
    g.add_argument("--train", metavar="SPAN",
                   help="training span per fold, as a duration (365d, 8w, 6h) or a number of "
                        "bars; its last --val-frac is the validation tail (default 365d)")
    g.add_argument("--test", metavar="SPAN",
                   help="test span per fold, duration or bars: how long each fold's models "
                        "trade before the next retraining (default 90d)")
    g.add_argument("--step", metavar="SPAN",
                   help="distance between fold starts; must equal --test, so test spans tile "
                        "the evaluated period (default: --test)")
    g.add_argument("--train-bars", type=int, metavar="N", help="training span in bars (instead "
                                                               "of --train)")
    g.add_argument("--test-bars", type=int, metavar="N", help="test span in bars (instead of "
                                                              "--test)")
    g.add_argument("--mode", choices=("rolling", "expanding"), default="rolling",
                   help="rolling: each fold trains on the span before its test; expanding: on "
                        "all bars before it (default rolling)")
    g.add_argument("--embargo", metavar="SPAN", default="0",
                   help="extra bars (or duration) skipped after the purge gap before each test "
                        "span (default 0; the purge gap itself is windows.gap_bars of the "
                        "config, >= the horizon, set through --config)")
    g.add_argument("--start", metavar="DATE",
                   help="use candles from this date on (e.g. 2019-01-01); the first fold trains "
                        "on the bars after it")
    g.add_argument("--end", metavar="DATE", help="use candles up to this date (inclusive)")
    add_pipeline_args(parser)
    run = parser.add_argument_group("run")
    add_seed_args(run)
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="train folds x regimes (x seeds) in N local processes (joblib); "
                          "results are identical to --jobs 1 (default 1)")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run the training tasks on an existing Dask distributed cluster, e.g. "
                          "tcp://10.0.0.5:8786 (needs `pip install distributed`)")
    run.add_argument("--run-id", metavar="ID",
                     help="name of the run folder under --reports-dir (default "
                          "wf_<DATASET>_<timeframe>/<UTC time>, with latest beside it); never "
                          "overwritten")
    run.add_argument("--resume", metavar="RUN_ID",
                     help="finish an interrupted run (wf_<DATASET>_<tf>/<stamp>, or "
                          "wf_<DATASET>_<tf> for its newest): reuse its config and data, skip "
                          "the folds "
                          "already trained, tune as it was tuned; other data/fold/pipeline/tuning "
                          "flags are not allowed")
    run.add_argument("--force", action="store_true",
                     help="a run folder of that --run-id exists: move it aside to "
                          "<run_id>.replaced-<UTC time> (never deleted) and start again")
    run.add_argument("--tune-trials", type=int, default=0, metavar="N",
                     help="nested tuning: an Optuna study of N trials inside every fold's "
                          "training span before fitting it (default 0: no tuning)")
    run.add_argument("--space", metavar="FILE",
                     help="with --tune-trials: a JSON search space replacing the default")
    add_output_args(run, reports="where run folders go (default: reports)",
                    tearsheet="skip the QuantStats HTML tearsheet",
                    quiet="no progress bar, warnings only")
    return parser


RESUME_KEEPS = ("symbol", "csv", "data_dir", "timeframe", "start", "end", "train", "test", "step",
                "train_bars", "test_bars", "config")


def _resume_args(args: argparse.Namespace) -> tuple[Path, argparse.Namespace, dict]:
    """Fill the data flags of a resumed run from its saved config.json."""
    flags = (*RESUME_KEEPS, *_FLAG_FIELDS, "features")
    given = [f"--{k.replace('_', '-')}" for k in flags if getattr(args, k, None) is not None]
    given += [f"--{k}" for k, default in (("mode", "rolling"), ("embargo", "0"), ("seeds", 1),
                                          ("ensemble", "none"))
              if getattr(args, k) != default]
    given += [f for f, k in (("--download", "download"), ("--base-url", "base_url"),
                             ("--tune-trials", "tune_trials"), ("--space", "space"))
              if getattr(args, k, None)]
    if given:
        raise ValueError(f"--resume takes the run's own settings; drop {', '.join(given)}")
    from bt_lstm.jobs.runs import resolve_run

    run_dir = resolve_run(Path(args.reports_dir) / args.resume)  # a group: its newest run
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"--resume {args.resume}: no run at {run_dir} (config.json missing)")
    saved = json.loads(path.read_text())
    for key, value in saved["source"].items():
        setattr(args, key, value)
    return run_dir, args, saved


def _spec(args: argparse.Namespace, bar):
    from bt_lstm.research.walkforward import WalkForwardSpec, parse_span

    if args.train and args.train_bars or args.test and args.test_bars:
        raise ValueError("give a span either as a duration (--train/--test) or in bars "
                         "(--train-bars/--test-bars), not both")
    train = args.train_bars or parse_span(args.train or "365d", bar, "--train")
    test = args.test_bars or parse_span(args.test or "90d", bar, "--test")
    step = parse_span(args.step, bar, "--step") if args.step else None
    embargo = 0 if str(args.embargo) == "0" else parse_span(args.embargo, bar, "--embargo")
    return WalkForwardSpec(train, test, step, args.mode, embargo)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet)

    def job() -> int:
        from bt_lstm.backtest.reports import format_summary
        from bt_lstm.config import PipelineConfig
        from bt_lstm.data.candles import infer_bar
        from bt_lstm.jobs.runs import describe_files, new_run_dir, run_id
        from bt_lstm.jobs.walk_forward import format_fold_table, run_walk_forward
        from bt_lstm.research.search_space import load_space
        from bt_lstm.research.walkforward import WalkForwardSpec
        from strategies.lstm_strategy import RegimeLSTMStrategy

        if args.jobs < 1 or args.tune_trials < 0:
            raise ValueError(f"--jobs {args.jobs} / --tune-trials {args.tune_trials}: use "
                             f"--jobs >= 1 and --tune-trials >= 0")
        tune_space = load_space(args.space) if args.tune_trials else None
        if args.resume:
            run_dir, _, saved = _resume_args(args)
            cfg = PipelineConfig.from_dict(saved["pipeline"])
            spec = WalkForwardSpec(**saved["walk_forward"])
            seeds = saved.get("seeds", {"n": 1, "ensemble": "none"})
            args.seeds, args.ensemble = seeds["n"], seeds["ensemble"]
            tuning = saved.get("tuning", {"trials": 0, "space": None})  # runs before tuning: 0
            args.tune_trials, tune_space = tuning["trials"], tuning["space"]
        else:
            cfg = build_config(args)
        frame, dataset, timeframe = load_dataset(args, cfg, check_split=False)
        frame = trim_dates(frame, args.start, args.end)
        if not args.resume:
            spec = _spec(args, infer_bar(frame.index))
            run_dir = (Path(args.reports_dir) / args.run_id if args.run_id else
                       new_run_dir(Path(args.reports_dir) / f"wf_{dataset}_{timeframe}"))
        source = {"symbol": args.symbol, "csv": str(Path(args.csv).resolve()) if args.csv
                  else None, "data_dir": args.data_dir, "timeframe": args.timeframe,
                  "start": args.start, "end": args.end}
        progress = _Progress(args.quiet)
        try:
            result = run_walk_forward(frame, dataset, timeframe, cfg, spec, RegimeLSTMStrategy,
                                      run_dir, source, jobs=args.jobs, scheduler=args.scheduler,
                                      resume=bool(args.resume),
                                      tearsheet=not args.no_tearsheet, force=args.force,
                                      start_progress=progress.start, seeds=args.seeds,
                                      ensemble=args.ensemble, tune_trials=args.tune_trials,
                                      tune_space=tune_space,
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
        for line in describe_files(run_dir, Path(args.reports_dir)):
            print(f"  {line}")
        return 0

    return run_cli(job)


class _Progress:
    """One tqdm bar over the fold x regime training tasks (elapsed time and ETA)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None

    def start(self, total: int, reused: int):
        from tqdm import tqdm

        if reused:
            print(f"resuming: {reused} folds already trained are reused", file=sys.stderr)
        self.bar = tqdm(total=total, desc="folds x regimes", unit="model", disable=self.quiet,
                        file=sys.stderr)

        def tick(fold: int, name: str) -> None:
            self.bar.update(1)
            self.bar.set_postfix(fold=fold, model=name)
        return tick

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


if __name__ == "__main__":
    sys.exit(main())
