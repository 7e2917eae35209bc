"""Download or update candles into <data-dir>/<SYMBOL>_<timeframe>.csv, the file --symbol reads.

Sources: Binance's public archive (data.binance.vision: monthly zips, daily zips for the current
month, every file checked against its .CHECKSUM), or any exchange through ccxt (fetch_ohlcv
paged with since). A rerun fetches only what is missing after the last stored candle; the
still-open candle is never written; the file is replaced atomically, so an interrupted run
leaves the old file whole and the next run resumes from the months or pages already fetched.
Gaps are reported, never filled.

Examples
--------
    python runners/download.py --symbol BTCUSDT --timeframe 4h                 # all history
    python runners/download.py --symbol ETHUSDT --timeframe 1h --start 2022-01-01 --end 2024-12-31
    python runners/download.py --symbol SOLUSDT --source ccxt --exchange binance
    python runners/download.py --symbol BTCUSDT --base-url http://127.0.0.1:8000   # a mirror
"""
from __future__ import annotations

import argparse
import sys

from bt_lstm.cli.args import add_group
from bt_lstm.cli.common import make_parser, run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm download`` (``prog``: the name its usage lines show;
    default the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_group(parser, "what", "symbol", "timeframe", "start", "end", "data_dir", "columns",
              symbol={"required": True}, timeframe={"default": "4h"})
    add_group(parser, "source", "source", "exchange", "base_url", "api_url")
    add_group(parser, "output", "quiet")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm download`` with ``argv`` (default: the process's arguments); return the exit
    code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, job, torch=False)


def job(args: argparse.Namespace) -> int:
    """Download or extend the candle file the flags name (archive or ccxt) and print the summary
    line; months the server lacks are listed, never filled."""
    from bt_lstm.cli.progress import fetch_with_progress
    from bt_lstm.data.download import DownloadRequest
    from bt_lstm.data.download.archive import DEFAULT_BASE_URL

    source = args.source or ("binance-archive" if args.exchange == "binance" else "ccxt")
    if args.api_url and source != "ccxt":
        raise ValueError("--api-url applies to --source ccxt; the archive takes --base-url")
    if args.base_url and source != "binance-archive":
        raise ValueError("--base-url applies to --source binance-archive; ccxt takes --api-url")
    req = DownloadRequest(
        symbol=args.symbol, timeframe=args.timeframe, source=source,
        exchange=args.exchange, data_dir=args.data_dir or default_data_dir(),
        start=args.start, end=args.end, base_url=args.base_url or DEFAULT_BASE_URL,
        api_url=args.api_url, columns=args.columns)
    try:
        result = fetch_with_progress(req, quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {req.path} is left as it was; rerun the same command to "
              f"resume (the files already fetched are kept)", file=sys.stderr)
        return 130
    print(result.summary())
    if result.not_on_server:
        print(f"not on the server (reported, not filled): "
              f"{describe_periods(result.not_on_server)}")
    return 0


def default_data_dir() -> str:
    """Where candle files go by default: ``$BT_LSTM_DATA_DIR``, else ``data``."""
    import os

    from bt_lstm.data.files import DATA_DIR_ENV

    return os.environ.get(DATA_DIR_ENV) or "data"


def describe_periods(labels: list[str], most: int = 6) -> str:
    """The first ``most`` period labels joined, and how many more there are."""
    shown = ", ".join(labels[:most])
    return shown + (f" and {len(labels) - most} more" if len(labels) > most else "")


if __name__ == "__main__":
    sys.exit(main())
