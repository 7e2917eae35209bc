"""Candle CSV -> freqtrade's data folder (``<datadir>/<PAIR>-<tf>.feather``), by freqtrade's own
data handler, so the file is exactly what ``freqtrade backtesting`` reads.

    python -m bt_lstm.freqai.convert --csv ../shared/data/BTCUSDT_4h.csv --pair BTC/USDT \\
        --timeframe 4h --datadir examples/freqtrade/user_data/data/binance
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bt_lstm.data.candles import DataError, load_ohlcv


def to_freqtrade_frame(candles: pd.DataFrame, start: str | None = None,
                       end: str | None = None) -> pd.DataFrame:
    """Our candle frame (tz-naive UTC open-time index) -> freqtrade's columns
    ``date`` (tz-aware UTC open time) ``open high low close volume``, cut to [start, end)."""
    frame = candles
    if start:
        frame = frame.loc[frame.index >= pd.Timestamp(start)]
    if end:
        frame = frame.loc[frame.index < pd.Timestamp(end)]
    if frame.empty:
        raise ValueError(f"no candles between {start or 'the start'} and {end or 'the end'}")
    out = frame[["open", "high", "low", "close", "volume"]].astype(float).reset_index(drop=True)
    out.insert(0, "date", pd.DatetimeIndex(frame.index).tz_localize("UTC"))
    return out


def write_freqtrade_candles(frame: pd.DataFrame, datadir: Path, pair: str, timeframe: str,
                            data_format: str = "feather") -> Path:
    """Store ``frame`` (``to_freqtrade_frame``'s columns) as freqtrade's spot candles of
    ``pair``/``timeframe`` under ``datadir``; return the file written."""
    from freqtrade.data.history import get_datahandler
    from freqtrade.enums import CandleType

    datadir.mkdir(parents=True, exist_ok=True)
    handler = get_datahandler(datadir, data_format)
    handler.ohlcv_store(pair, timeframe, frame, CandleType.SPOT)
    return handler._pair_data_filename(datadir, pair, timeframe, CandleType.SPOT)


def main(argv: list[str] | None = None) -> int:
    """``python -m bt_lstm.freqai.convert``; user mistakes are one line on stderr, exit 2."""
    ap = argparse.ArgumentParser(prog="python -m bt_lstm.freqai.convert",
                                 description="Write a candle CSV in freqtrade's data format.")
    ap.add_argument("--csv", required=True, help="candle CSV (timestamp,open,high,low,close,"
                    "volume or a Binance kline CSV)")
    ap.add_argument("--pair", required=True, help="freqtrade pair name, e.g. BTC/USDT")
    ap.add_argument("--timeframe", required=True, help="the CSV's bar, e.g. 4h")
    ap.add_argument("--datadir", required=True, type=Path,
                    help="freqtrade data folder, e.g. user_data/data/binance")
    ap.add_argument("--start", help="first candle kept (ISO date, UTC)")
    ap.add_argument("--end", help="candles from this date on are left out (ISO date, UTC)")
    ap.add_argument("--data-format", default="feather", choices=("feather", "json", "parquet"),
                    help="freqtrade's dataformat_ohlcv (default feather)")
    args = ap.parse_args(argv)
    try:
        frame = to_freqtrade_frame(load_ohlcv(args.csv), args.start, args.end)
        path = write_freqtrade_candles(frame, args.datadir, args.pair, args.timeframe,
                                       args.data_format)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(frame)} candles ({frame['date'].iloc[0]} .. {frame['date'].iloc[-1]}) "
          f"to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
