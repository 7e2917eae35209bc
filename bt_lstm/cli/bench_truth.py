"""Known-truth benchmark on the synthetic market: prints a table and writes bench_truth.json.

The generator knows each bar's true regime and true expected next-bar return, so on its test
part this reports each regime classifier's balanced accuracy (and recall per regime), the
out-of-sample R² of the regime LSTM, a global LSTM, an MLP and ridge against the oracle's R²
(the ceiling), and the Sharpe of the strategy trading the oracle's forecast against the one
trading the model's. Targets: regime LSTM R² >= 0.8 x oracle; default classifier >= 0.85
balanced accuracy. A missed target is reported, not hidden (exit code stays 0).

Examples
--------
    python runners/bench_truth.py
    python runners/bench_truth.py --bars 10000 --seed 7 --out reports/bench_truth_s7.json
"""
from __future__ import annotations

import argparse
import sys

from bt_lstm.cli.args import MARKET_SEED, add_flags, read_config
from bt_lstm.cli.common import make_parser, run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm bench-truth`` (``prog``: the name its usage lines show;
    default the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_flags(parser, "bars")
    MARKET_SEED.add_to(parser)
    add_flags(parser, "config", "out", "quiet", out={"default": "reports/bench_truth.json"})
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm bench-truth`` with ``argv`` (default: the process's arguments); return the
    exit code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    parser = build_parser(prog)
    return run_cli(parser, argv, job, quiet=True)


def job(args: argparse.Namespace) -> int:
    """Fit the pipeline on the synthetic market, score it against the known regimes and expected
    returns, print the table and write the JSON (``--out``). A missed target is reported; the
    exit code stays 0."""
    from bt_lstm.data.files import atomic_write_json, clean_json
    from bt_lstm.data.synthetic import make_market
    from bt_lstm.research.truth import format_truth, run_truth_bench
    from strategies.lstm_strategy import RegimeLSTMStrategy

    cfg = read_config(args.config)
    market = make_market(n_bars=args.bars, seed=args.seed)
    if not args.quiet:
        print(f"training on the synthetic market ({args.bars} bars, seed {args.seed}) ...",
              file=sys.stderr)
    res = run_truth_bench(market, cfg, RegimeLSTMStrategy)
    res = clean_json(dict(res, market={"bars": args.bars, "seed": args.seed},
                          config=cfg.to_dict()))
    atomic_write_json(args.out, res)
    print(format_truth(res))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
