"""Train (or reuse) regime LSTMs, backtest them out of sample in Backtrader, write a tearsheet.

Examples
--------
    python runners/backtest.py                          # bundled SAMPLE market, offline
    python runners/backtest.py --symbol BTCUSDT         # reads data/BTCUSDT_4h.csv
    python runners/backtest.py --csv candles.csv --timeframe 1h --threshold 0.002
    python runners/backtest.py --symbols BTCUSDT,ETHUSDT --panel pooled   # one portfolio
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
)
from bt_lstm.cli.common import load_data, make_parser, print_luck, run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm backtest`` (``prog``: the name its usage lines show;
    default the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_group(parser, "data (default: the bundled synthetic SAMPLE market)", *DATA,
              csv={"append": True})
    add_group(parser, "several markets (--csv repeated or --symbols; one market runs alone)",
              *MARKETS)
    add_group(parser, "download (with --symbol)", *DOWNLOAD)
    add_pipeline_groups(parser)
    add_group(parser, "run", "retrain", "inference", *SEEDS, "jobs", "models_dir", "reports_dir",
              "no_tearsheet", "quiet")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm backtest`` with ``argv`` (default: the process's arguments); return the exit
    code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, job)


def job(args: argparse.Namespace) -> int:
    """Run the main job on the parsed flags: load candles, train or reuse the regime models,
    backtest the test part, write the report folder; print the summary, skill guard and luck
    lines and every file written."""
    from bt_lstm.cli.markets import backtest_markets, several_markets
    from bt_lstm.cli.progress import TrainProgress
    from bt_lstm.jobs.backtest import run_main_job
    from strategies.lstm_strategy import RegimeLSTMStrategy

    cfg = build_config(args)
    if several_markets(args):
        return backtest_markets(args, cfg)
    frame, dataset, timeframe = load_data(args, cfg)
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
    print_result(result)
    return 0


def print_result(result) -> None:
    """The terminal report of a backtest run: summary, skill guard, luck, where files went."""
    from bt_lstm.signals.regimes import REGIME_LABELS

    print(result.summary())
    skill = result.metrics["skill"]
    print(f"\nskill guard (validation windows; --no-skill {skill['policy']}, "
          f"--skill-p {skill['skill_p']:g}):")
    for regime in REGIME_LABELS:
        if regime in skill:
            print(f"  {skill[regime]['line']}")
    print_luck(result.metrics)
    for regime, why in result.metrics["fallbacks"].items():
        print(f"note: regime {regime} used the pooled model ({why})")
    print_files(result)


def print_files(result) -> None:
    """Where the models and the report went, one line per file written."""
    model_dirs = result.metrics["models"].get("dirs") or [str(result.model_dir)]
    print(f"\nmodels:  {', '.join(model_dirs)}"
          + ("  (reused)" if result.reused_models else ""))
    if result.no_trades:
        print(f"\n{result.no_trades}")
    print(f"report:  {result.report_dir}")
    for f in result.files:
        print(f"  {f}")


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
