"""A local stand-in for Binance's REST API on 127.0.0.1, for ``freqtrade backtesting`` offline.

freqtrade loads the exchange's markets through ccxt when it starts; point the config's
``exchange.ccxt_config.urls.api`` at this server (``example_ccxt_config``) and it answers
``exchangeInfo`` (and klines) from a candle CSV, never the real exchange::

    python -m bt_lstm.freqai.exchange --csv ../shared/data/BTCUSDT_4h.csv --symbol BTCUSDT \\
        --timeframe 4h --port 18765
"""
from __future__ import annotations

import argparse
import sys
import threading

import pandas as pd

from bt_lstm.data.candles import DataError, load_ohlcv
from bt_lstm.data.download.mirror import KlineMirror

# the ccxt url keys a Binance spot start-up may touch; all point at the stand-in
_API_KEYS = ("public", "private", "v1", "sapi", "sapiV2", "sapiV3", "sapiV4")


def example_ccxt_config(port: int) -> dict:
    """The ``exchange.ccxt_config`` that sends freqtrade's ccxt to the stand-in on ``port``:
    spot markets only (ccxt would also ask the futures APIs) and every spot URL rewritten."""
    base = f"http://127.0.0.1:{port}/api"
    return {"options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
            "urls": {"api": {key: f"{base}/v3" for key in _API_KEYS}}}


def mirror_rows(candles: pd.DataFrame) -> list[tuple]:
    """Candle frame -> the mirror's rows ``(open_ms, open, high, low, close, volume)``."""
    ms = pd.DatetimeIndex(candles.index).as_unit("ms").asi8
    cols = candles[["open", "high", "low", "close", "volume"]].to_numpy(dtype=float)
    return [(int(t), *map(float, row)) for t, row in zip(ms, cols)]


def start_exchange(candles: pd.DataFrame, symbol: str, timeframe: str,
                   port: int = 0) -> KlineMirror:
    """Serve ``candles`` as ``symbol``/``timeframe`` on 127.0.0.1:``port`` (0: any free port);
    call ``close()`` on the result to stop."""
    return KlineMirror({symbol: {timeframe: mirror_rows(candles)}}, port=port)


def main(argv: list[str] | None = None) -> int:
    """``python -m bt_lstm.freqai.exchange``: serve until interrupted."""
    ap = argparse.ArgumentParser(prog="python -m bt_lstm.freqai.exchange",
                                 description="Serve a candle CSV as Binance's REST API on "
                                             "127.0.0.1 (exchangeInfo, klines).")
    ap.add_argument("--csv", required=True, help="candle CSV")
    ap.add_argument("--symbol", required=True, help="exchange symbol, e.g. BTCUSDT")
    ap.add_argument("--timeframe", required=True, help="the CSV's bar, e.g. 4h")
    ap.add_argument("--port", type=int, default=18765, help="port on 127.0.0.1 (default 18765)")
    args = ap.parse_args(argv)
    try:
        mirror = start_exchange(load_ohlcv(args.csv), args.symbol, args.timeframe, args.port)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"serving {args.symbol} {args.timeframe} as Binance's REST API at {mirror.url} "
          f"(Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        mirror.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
