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

from bt_lstm.cli.common import make_parser, run_cli, setup_logging


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__, prog)
    g = parser.add_argument_group("what")
    g.add_argument("--symbol", required=True, metavar="S",
                   help="market id, e.g. BTCUSDT (with --source ccxt also BTC/USDT); the file is "
                        "<data-dir>/<S>_<timeframe>.csv")
    g.add_argument("--timeframe", default="4h", metavar="T",
                   help="bar length: 1m, 5m, 15m, 1h, 4h, 1d ... (default 4h)")
    g.add_argument("--start", metavar="DATE",
                   help="first day to fetch for a new file, UTC (default: all history); a stored "
                        "file is always continued from its last candle")
    g.add_argument("--end", metavar="DATE",
                   help="last day to fetch, inclusive, UTC (default: up to the last closed "
                        "candle)")
    g.add_argument("--data-dir", metavar="DIR",
                   help="where the CSV goes (default: $BT_LSTM_DATA_DIR or data)")
    s = parser.add_argument_group("source")
    s.add_argument("--source", choices=("binance-archive", "ccxt"),
                   help="binance-archive: Binance spot's public kline zips (default with "
                        "--exchange binance); ccxt: the exchange's REST API through ccxt "
                        "(default for any other --exchange)")
    s.add_argument("--exchange", default="binance", metavar="NAME",
                   help="ccxt exchange id: binance, bybit, kraken, okx ... (default binance)")
    s.add_argument("--base-url", metavar="URL",
                   help="archive root instead of https://data.binance.vision (a mirror, or a "
                        "local server in tests)")
    s.add_argument("--api-url", metavar="URL",
                   help="with --source ccxt: send the exchange's API requests to this scheme "
                        "and host instead (a proxy, a mirror, a local server in tests)")
    o = parser.add_argument_group("output")
    o.add_argument("--quiet", action="store_true", help="no progress bar; the summary line only")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet, torch=False)

    def job() -> int:
        from bt_lstm.data.download import DownloadRequest
        from bt_lstm.data.download.archive import DEFAULT_BASE_URL

        source = args.source or ("binance-archive" if args.exchange == "binance" else "ccxt")
        if args.api_url and source != "ccxt":
            raise ValueError("--api-url applies to --source ccxt; the archive takes --base-url")
        if args.base_url and source != "binance-archive":
            raise ValueError("--base-url applies to --source binance-archive; ccxt takes "
                             "--api-url")
        req = DownloadRequest(
            symbol=args.symbol, timeframe=args.timeframe, source=source,
            exchange=args.exchange, data_dir=args.data_dir or default_data_dir(),
            start=args.start, end=args.end, base_url=args.base_url or DEFAULT_BASE_URL,
            api_url=args.api_url)
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

    return run_cli(job)


def default_data_dir() -> str:
    import os

    from bt_lstm.data.files import DATA_DIR_ENV

    return os.environ.get(DATA_DIR_ENV) or "data"


def describe_periods(labels: list[str], most: int = 6) -> str:
    shown = ", ".join(labels[:most])
    return shown + (f" and {len(labels) - most} more" if len(labels) > most else "")


def fetch_with_progress(req, quiet: bool = False):
    """Run the download behind a tqdm bar (files or pages)."""
    from tqdm import tqdm

    from bt_lstm.data.download import download_candles

    bars: list = []

    def progress(total: int, unit: str):
        bar = tqdm(total=total, unit=unit, desc=f"{req.file_symbol} {req.timeframe}",
                   disable=quiet, file=sys.stderr, leave=False)
        bars.append(bar)

        def step(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)
        return step

    try:
        return download_candles(req, progress)
    finally:
        for bar in bars:
            bar.close()


if __name__ == "__main__":
    sys.exit(main())
