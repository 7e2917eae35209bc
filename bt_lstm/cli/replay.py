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

from bt_lstm.cli.common import make_parser, run_cli, setup_logging


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__, prog)
    parser.add_argument("--csv", required=True, metavar="FILE", help="OHLCV candles")
    parser.add_argument("--symbol", default="BTCUSDT", metavar="S", help="(default BTCUSDT)")
    parser.add_argument("--timeframe", metavar="T", help="(default: inferred from the file)")
    parser.add_argument("--start", metavar="DATE", help="first streamed candle (default: 80%% in)")
    parser.add_argument("--port", type=int, default=9000, metavar="P", help="(default 9000)")
    parser.add_argument("--host", default="127.0.0.1", metavar="H", help="(default 127.0.0.1)")
    parser.add_argument("--speed", type=float, default=10.0, metavar="N",
                        help="candles a second (default 10)")
    parser.add_argument("--updates", type=int, default=2, metavar="N",
                        help="unfinished-candle messages before each close (default 2)")
    parser.add_argument("--faults", default="", metavar="A,B",
                        help="drop,duplicate,gap,reorder,shutdown (default none)")
    parser.add_argument("--fault-every", type=int, default=25, metavar="N",
                        help="each fault fires once every N candles (default 25)")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet, torch=False)

    def job() -> int:
        import asyncio

        import pandas as pd

        from bt_lstm.cli.common import timeframe_label
        from bt_lstm.data.candles import infer_bar, load_ohlcv
        from bt_lstm.live.klines import candles_of, timeframe_ms
        from bt_lstm.live.replay import ReplayConfig, ReplayServer

        frame = load_ohlcv(args.csv)
        tf = args.timeframe or timeframe_label(infer_bar(frame.index))
        start = (int(frame.index.searchsorted(pd.Timestamp(args.start))) if args.start
                 else int(len(frame) * 0.8))
        if not 0 < start < len(frame):
            raise ValueError(f"--start {args.start}: outside the file's candles")
        faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
        server = ReplayServer(candles_of(frame), ReplayConfig(
            args.symbol.upper(), tf, timeframe_ms(tf), start, speed=args.speed,
            updates=args.updates, faults=faults, fault_every=args.fault_every))
        print(f"replaying {len(frame) - start} candles of {args.csv} from {frame.index[start]} "
              f"on ws://{args.host}:{args.port}/ws/{args.symbol.lower()}@kline_{tf} and "
              f"http://{args.host}:{args.port}/api/v3/klines", flush=True)
        asyncio.run(server.serve_forever(args.host, args.port))
        return 0

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
