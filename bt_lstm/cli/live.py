"""Live paper trading: Binance kline WebSocket -> the backtest's models -> paper fills.

Acts only on closed candles; backfills over REST on start and after every reconnect; decides
each candle as RegimeLSTMStrategy would (the same function), fills at the next open with
commission and slippage, and keeps candles, decisions, fills and the account in SQLite in
--state (decisions.csv, fills.csv and status.json beside it). Restart it any time: it goes on
from its last committed candle. PAPER TRADING ONLY: no order ever reaches an exchange.

Examples
--------
    python runners/live.py --symbol BTCUSDT --timeframe 4h --models models/BTCUSDT_4h
    python runners/live.py --symbol BTCUSDT --timeframe 4h --model-server http://127.0.0.1:8000
    python runners/live.py --symbol BTCUSDT --timeframe 4h --models models/BTCUSDT_4h \\
        --ws-url ws://127.0.0.1:9000 --rest-url http://127.0.0.1:9000 --stop-after 300
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_lstm.cli.common import make_parser, run_cli, setup_logging


def add_strategy_args(parser: argparse.ArgumentParser) -> None:
    s = parser.add_argument_group("strategy and costs (as the backtest's; default: its defaults)")
    s.add_argument("--config", metavar="JSON", help="a config.json of a run (its strategy part)")
    s.add_argument("--threshold", type=float, metavar="X", help="|forecast| to hold a position")
    s.add_argument("--long-only", action="store_true", default=None, help="never go short")
    s.add_argument("--fraction", type=float, metavar="F", help="fraction of equity per position")
    s.add_argument("--commission", type=float, metavar="F", help="fraction of notional")
    s.add_argument("--slippage", type=float, metavar="F", help="fraction of price")
    s.add_argument("--cash", type=float, metavar="X", help="starting cash")
    s.add_argument("--no-skill", choices=("flat", "pooled", "trade"),
                   help="policy for regimes without validated skill (default: flat)")
    s.add_argument("--skill-p", type=float, metavar="P", help="skill p-value bound")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__, prog)
    m = parser.add_argument_group("market and models")
    m.add_argument("--symbol", required=True, metavar="S", help="e.g. BTCUSDT")
    m.add_argument("--timeframe", required=True, metavar="T", help="e.g. 4h")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--models", metavar="DIR", help="a model bundle: forecasts in-process")
    src.add_argument("--model-server", metavar="URL", help="forecasts from runners/serve.py")
    f = parser.add_argument_group("feed")
    f.add_argument("--ws-url", default="wss://stream.binance.com:9443", metavar="URL",
                   help="kline WebSocket host (default: Binance spot)")
    f.add_argument("--rest-url", default="https://api.binance.com", metavar="URL",
                   help="REST host for /api/v3/klines backfills (default: Binance spot)")
    f.add_argument("--backoff", type=float, default=0.5, metavar="S",
                   help="first reconnect/retry wait, doubled each time (default 0.5)")
    f.add_argument("--rest-tries", type=int, default=5, metavar="N",
                   help="REST attempts before giving up (default 5)")
    r = parser.add_argument_group("run")
    r.add_argument("--state", metavar="DIR", help="state folder (default live/<SYMBOL>_<tf>)")
    r.add_argument("--stop-after", type=int, metavar="N",
                   help="stop once N candles are decided in this state folder (all runs)")
    r.add_argument("--status-port", type=int, metavar="P",
                   help="serve a status page on 127.0.0.1:P")
    r.add_argument("--quiet", action="store_true", help="warnings and errors only")
    add_strategy_args(parser)
    return parser


def strategy_config(args: argparse.Namespace):
    from bt_lstm.cli.common import build_config

    return build_config(args)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet)

    def job() -> int:
        from bt_lstm.live.feed import FeedConfig, FeedError
        from bt_lstm.live.klines import timeframe_ms
        from bt_lstm.live.run import build_engine, run_feed

        cfg = strategy_config(args)
        symbol = args.symbol.upper()
        state = Path(args.state or Path("live") / f"{symbol}_{args.timeframe}")
        engine = build_engine(symbol, args.timeframe, cfg.strategy, state, models=args.models,
                              model_server=args.model_server, no_skill=cfg.strategy.no_skill,
                              skill_p=cfg.strategy.skill_p)
        feed_cfg = FeedConfig(symbol, args.timeframe, timeframe_ms(args.timeframe),
                              ws_url=args.ws_url, rest_url=args.rest_url,
                              rest_tries=args.rest_tries, backoff_s=args.backoff,
                              stop_after=args.stop_after)
        try:
            feed = run_feed(engine, feed_cfg, args.status_port)
        except FeedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            engine.close()
        print(f"{symbol} {args.timeframe}: {engine.acct['bars']} candles decided, position "
              f"{engine.acct['position']:g}, state in {state} (paper trading only)")
        if feed.engine.feed_health["gaps"]:
            print(f"gaps not filled: {feed.engine.feed_health['gaps']}")
        return 0

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
