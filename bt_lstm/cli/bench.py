"""Speed benchmark: prints a table and writes bench.json (figures are medians of repetitions).

Measures, on BTCUSDT 4h (from ../shared/data, $BT_LSTM_REAL_DATA or --csv; a synthetic series of
the same length where absent):
  - the RegimeLSTMStrategy backtest (batch forecasts + Backtrader) vs a no-model SMA cross on the
    same feed: wall time, bars/s, ratio (target <= 1.5);
  - per-window inference latency (median, p99) and batch throughput of every architecture;
  - training throughput of the default config vs a bare PyTorch loop (target ratio <= 1.3);
  - peak memory (RSS) of a process running the backtest;
  - a cached rerun of `python runners/backtest.py` end to end (target <= 15 s).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_lstm.cli.common import config_from_file, make_parser, run_cli, setup_logging


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__, prog)
    parser.add_argument("--csv", metavar="FILE",
                        help="candles to benchmark on (default: BTCUSDT_4h.csv from "
                             "$BT_LSTM_REAL_DATA or ../shared/data, else synthetic)")
    parser.add_argument("--config", metavar="JSON",
                        help="pipeline config to benchmark, e.g. a run's config.json (default: "
                             "the default config, as `python runners/backtest.py` uses)")
    parser.add_argument("--reps", type=int, default=5,
                        help="repetitions per figure; the median is reported (default 5)")
    parser.add_argument("--train-epochs", type=int, default=3,
                        help="epochs per training measurement (default 3)")
    parser.add_argument("--out", default="reports/bench.json", metavar="FILE",
                        help="where the JSON goes (default reports/bench.json)")
    parser.add_argument("--skip-rerun", action="store_true",
                        help="skip timing the cached rerun of runners/backtest.py")
    parser.add_argument("--dqn-steps", type=int, default=2000, metavar="N",
                        help="DQN training steps timed per Q-network (LSTM, Dense) after a "
                             "random warm-up; 0 skips the DQN figures (default 2000)")
    parser.add_argument("--label", default="", help="free text stored in the JSON (e.g. 'before')")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(quiet=True)

    def job() -> int:
        from bt_lstm.jobs.bench import format_bench, load_bench_data, run_bench
        from strategies.lstm_strategy import RegimeLSTMStrategy
        from strategies.sma_cross import SmaCross

        if args.reps < 1 or args.train_epochs < 1:
            raise ValueError("--reps and --train-epochs must be >= 1")
        cfg = config_from_file(args.config)
        frame, source = load_bench_data(args.csv)
        print(f"benchmarking on {source} ({len(frame)} bars), {args.reps} reps ...",
              file=sys.stderr)
        res = run_bench(frame, source, cfg, RegimeLSTMStrategy, SmaCross, args.reps,
                        args.train_epochs, Path(args.out), args.label, not args.skip_rerun,
                        dqn_steps=args.dqn_steps)
        print(format_bench(res))
        print(f"\nwritten: {args.out}")
        return 0

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
