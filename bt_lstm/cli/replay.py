"""Replay a CSV's candles as a Binance kline WebSocket stream and REST endpoint (demo, tests).

Candles before --start are history (REST only); from --start on each candle is streamed as
unfinished updates then its close, --speed candles a second, from the first client's connection.
--faults switches on drop (connection cut), duplicate (a closed candle twice), gap (a closed
candle never sent), reorder (two candles swapped) and shutdown (a serverShutdown notice).

Examples
--------
    python runners/replay.py --csv data/BTCUSDT_4h.csv --start 2025-06-01 --port 9000 --speed 200
    python runners/replay.py --csv candles.csv --start 2024-01-01 --faults drop,gap,reorder
"""
from __future__ import annotations

import argparse
import sys

from bt_lstm.cli.args import add_flags
from bt_lstm.cli.common import make_parser, run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm replay`` (``prog``: the name its usage lines show;
    default the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_flags(parser, "csv", "symbol", "timeframe", "start", "port", "host", "speed", "updates",
              "faults", "fault_every", "quiet", csv={"required": True},
              symbol={"default": "BTCUSDT"}, port={"default": 9000})
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm replay`` with ``argv`` (default: the process's arguments); return the exit
    code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, job, torch=False)


def job(args: argparse.Namespace) -> int:
    """Serve the CSV's candles over the Binance kline WebSocket and REST protocol until
    interrupted."""
    import asyncio

    import pandas as pd

    from bt_lstm.data.candles import infer_bar, load_ohlcv
    from bt_lstm.jobs.datasets import timeframe_label
    from bt_lstm.live.klines import candles_of, timeframe_ms
    from bt_lstm.live.replay import ReplayConfig, ReplayServer

    frame = load_ohlcv(args.csv)
    tf = args.timeframe or timeframe_label(infer_bar(frame.index))
    start = (int(frame.index.searchsorted(pd.Timestamp(args.start))) if args.start
             else int(len(frame) * 0.8))
    if not 0 < start < len(frame):
        raise ValueError(f"--start {args.start}: outside the file's candles (default: 80% in)")
    faults = tuple(f for f in args.faults.split(",") if f)
    server = ReplayServer(candles_of(frame), ReplayConfig(
        args.symbol.upper(), tf, timeframe_ms(tf), start, speed=args.speed,
        updates=args.updates, faults=faults, fault_every=args.fault_every))
    print(f"replaying {len(frame) - start} candles of {args.csv} from {frame.index[start]} "
          f"on ws://{args.host}:{args.port}/ws/{args.symbol.lower()}@kline_{tf} and "
          f"http://{args.host}:{args.port}/api/v3/klines", flush=True)
    asyncio.run(server.serve_forever(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
