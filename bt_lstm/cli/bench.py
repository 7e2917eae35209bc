"""Speed benchmark: prints a table and writes bench.json (figures are medians of repetitions).

Measures, on BTCUSDT 4h (from ../shared/data, $BT_LSTM_REAL_DATA or --csv; a synthetic series of
the same length where absent):
  - the RegimeLSTMStrategy backtest (batch forecasts + Backtrader) vs a no-model SMA cross on the
    same feed: wall time, bars/s, ratio (target <= 1.25);
  - per-window inference latency (median, p99) and batch throughput of every architecture;
  - training throughput of the default config vs a bare PyTorch loop (target ratio <= 1.3);
  - peak memory (RSS) of a process running the backtest;
  - the DQN trader's training env steps/s with DQNConfig's default settings (goal >= 500);
  - a cached rerun of `bt-lstm backtest` end to end (target <= 8 s).
With --markets N it measures only the portfolio backtest: 1, 4, 16 ... N copies of real markets
in one Backtrader run against the one-market backtest (target <= N x 1.2 its time), with the
peak memory of a fresh process for each size.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bt_lstm.cli.args import add_flags, read_config
from bt_lstm.cli.common import make_parser, run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm bench`` (``prog``: the name its usage lines show; default
    the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_flags(parser, "csv", "config", "reps", "train_epochs", "out", "skip_rerun", "dqn_steps",
              "label", "markets", out={"default": "reports/bench.json"})
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm bench`` with ``argv`` (default: the process's arguments); return the exit
    code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, job, quiet=True)


def job(args: argparse.Namespace) -> int:
    """Run the speed benchmark on the parsed flags, print its table and write the JSON
    (``--out``)."""
    from bt_lstm.jobs.bench import format_bench, load_bench_data, run_bench
    from strategies.lstm_strategy import RegimeLSTMStrategy
    from strategies.sma_cross import SmaCross

    cfg = read_config(args.config)
    if args.markets is not None:
        return markets_job(args, cfg)
    frame, source = load_bench_data(args.csv)
    print(f"benchmarking on {source} ({len(frame)} bars), {args.reps} reps ...",
          file=sys.stderr)
    res = run_bench(frame, source, cfg, RegimeLSTMStrategy, SmaCross, args.reps,
                    args.train_epochs, Path(args.out), args.label, not args.skip_rerun,
                    dqn_steps=args.dqn_steps)
    print(format_bench(res))
    print(f"\nwritten: {args.out}")
    return 0


def markets_job(args: argparse.Namespace, cfg: Any) -> int:
    """``--markets N``: the portfolio benchmark alone, its table, its JSON (``--out``)."""
    from bt_lstm.jobs.bench_portfolio import format_portfolio_bench, run_portfolio_bench
    from strategies.lstm_strategy import RegimeLSTMStrategy
    from strategies.portfolio import PortfolioStrategy

    print(f"benchmarking the portfolio backtest of up to {args.markets} markets, {args.reps} "
          f"reps ...", file=sys.stderr)
    res = run_portfolio_bench(args.markets, RegimeLSTMStrategy, PortfolioStrategy,
                              cfg.strategy, args.reps, Path(args.out), args.label)
    print(format_portfolio_bench(res))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
