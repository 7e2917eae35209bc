"""Train (or reuse) regime LSTMs, backtest them out of sample in Backtrader, write a tearsheet.

Examples
--------
    python runners/backtest.py                          # bundled SAMPLE market, offline
    python runners/backtest.py --symbol BTCUSDT         # reads data/BTCUSDT_4h.csv
    python runners/backtest.py --csv candles.csv --timeframe 1h --threshold 0.002
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_lstm.cli.common import (
    TrainProgress,
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
)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__, prog)
    add_data_args(parser)
    add_download_args(parser)
    add_pipeline_args(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--retrain", action="store_true",
                     help="train again even when models for this data and config are saved")
    run.add_argument("--inference", choices=("batch", "per_bar"), default="batch",
                     help="batch: forecasts computed for all bars at once, then read bar by bar "
                          "(fast, identical); per_bar: the strategy runs the model in every "
                          "bar (slow, as in live trading). Default: batch")
    add_seed_args(run)
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="with --seeds K: train the K seeds' models in N local processes "
                          "(default 1)")
    add_output_args(run, models="where trained model bundles are kept and reused (default: "
                                "models)",
                    reports="where the report folder is written (default: reports)",
                    tearsheet="skip the QuantStats HTML tearsheet (metrics.json is still written)")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet)

    def job() -> int:
        from bt_lstm.jobs.backtest import run_main_job
        from bt_lstm.signals.regimes import REGIME_LABELS
        from strategies.lstm_strategy import RegimeLSTMStrategy

        cfg = build_config(args)
        frame, dataset, timeframe = load_dataset(args, cfg)
        name = f"{dataset}_{timeframe}"
        progress = TrainProgress(cfg.train.epochs, disable=args.quiet)
        model_dir = Path(args.models_dir) / name
        report_dir = Path(args.reports_dir) / f"backtest_{name}"
        try:
            result = run_main_job(
                frame, dataset, cfg, RegimeLSTMStrategy,
                model_dir=model_dir, report_dir=report_dir,
                retrain=args.retrain, inference=args.inference, timeframe=timeframe,
                progress_factory=progress.factory, tearsheet=not args.no_tearsheet,
                seeds=args.seeds, ensemble=args.ensemble, jobs=args.jobs)
        except KeyboardInterrupt:
            progress.close()
            print(f"interrupted: {_kept(model_dir, 'models')}; {_kept(report_dir, 'report')}",
                  file=sys.stderr)
            return 130
        finally:
            progress.close()
        print(result.summary())
        skill = result.metrics["skill"]
        print(f"\nskill guard (validation windows; --no-skill {skill['policy']}, "
              f"--skill-p {skill['skill_p']:g}):")
        for regime in REGIME_LABELS:
            if regime in skill:
                print(f"  {skill[regime]['line']}")
        print_luck(result.metrics)
        fallbacks = result.metrics["fallbacks"]
        for regime, why in fallbacks.items():
            print(f"note: regime {regime} used the pooled model ({why})")
        model_dirs = result.metrics["models"].get("dirs") or [str(result.model_dir)]
        print(f"\nmodels:  {', '.join(model_dirs)}"
              + ("  (reused)" if result.reused_models else ""))
        if result.no_trades:
            print(f"\n{result.no_trades}")
        print(f"report:  {result.report_dir}")
        for f in result.files:
            print(f"  {f}")
        return 0

    return run_cli(job)


def _kept(folder: Path, what: str) -> str:
    """What an interruption left in place (writes are whole or not at all)."""
    if (folder / "latest").exists():  # a report group: its newest run
        folder = folder / "latest"
    if (folder / "manifest.json").is_file() or (folder / "metrics.json").is_file():
        verb = "are" if what.endswith("s") else "is"
        return f"the {what} of the last complete run {verb} kept in {folder}"
    return f"no {what} were saved yet ({folder} holds nothing from this run)"


if __name__ == "__main__":
    sys.exit(main())
