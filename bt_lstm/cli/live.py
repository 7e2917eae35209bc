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

Split over Redis Streams (--bus): ingestion, forecasts and decisions as separate processes,
several engine or decide processes sharing the work (see README, "Live scale-out"):
    python runners/live.py --bus redis://127.0.0.1:6379/0 --role ingest \\
        --symbol BTCUSDT,ETHUSDT --timeframe 4h
    python runners/live.py --bus redis://127.0.0.1:6379/0 --role engine --models-root models/
    python runners/live.py --bus redis://127.0.0.1:6379/0 --role decide \\
        --state postgresql://postgres@127.0.0.1/test
    python runners/live.py --bus redis://127.0.0.1:6379/0 --status
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
    m.add_argument("--symbol", metavar="S",
                   help="e.g. BTCUSDT (required without --bus; with --bus: several, comma "
                        "separated; engine/decide default: every market ingest publishes)")
    m.add_argument("--timeframe", metavar="T", help="e.g. 4h (required without --bus)")
    src = m.add_mutually_exclusive_group()
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
    r.add_argument("--state", metavar="DIR|URL",
                   help="state folder (default live/<SYMBOL>_<tf>); --role decide: a folder "
                        "(SQLite, one decide process; <DIR>/<SYMBOL>_<tf>/ per market, default "
                        "live/) or a postgresql:// URL shared by several decide processes")
    r.add_argument("--stop-after", type=int, metavar="N",
                   help="stop once N candles are decided in this state folder (all runs); "
                        "--bus: ingest once N decided candles per symbol are published, engine "
                        "once every market has N forecasts, decide once every market has N "
                        "decisions")
    r.add_argument("--status-port", type=int, metavar="P",
                   help="serve a status page on 127.0.0.1:P (with --role decide: every "
                        "market's decisions and the bus's length, pending and lag per stream "
                        "and group)")
    r.add_argument("--export", metavar="DIR",
                   help="with --state postgresql://...: write every market's decisions.csv and "
                        "fills.csv (the columns of a state folder's) to DIR/<SYMBOL>_<tf>/, "
                        "then exit")
    r.add_argument("--quiet", action="store_true", help="warnings and errors only")
    add_bus_args(parser)
    add_strategy_args(parser)
    return parser


def add_bus_args(parser: argparse.ArgumentParser) -> None:
    b = parser.add_argument_group("bus: the pipeline split over Redis Streams")
    b.add_argument("--bus", metavar="URL",
                   help="redis://HOST:6379/0: run one role of the split pipeline (needs --role "
                        "or --status)")
    b.add_argument("--role", choices=("ingest", "engine", "decide"),
                   help="ingest: kline feed -> candles:<S>:<tf>; engine: candles -> forecasts:"
                        "<S>:<tf>; decide: forecasts -> decisions and paper fills in --state")
    b.add_argument("--status", action="store_true",
                   help="print length, pending and lag per stream and consumer group, and the "
                        "dead-letter counts, then exit")
    b.add_argument("--models-root", metavar="DIR",
                   help="engine: one bundle per market in DIR/<SYMBOL>_<tf>/ (else --models "
                        "serves every market)")
    b.add_argument("--torch-threads", type=int, default=1, metavar="N",
                   help="engine: torch intra-op threads (default 1: one window per forecast, "
                        "and several engines share the cores; 0 leaves torch's choice)")
    b.add_argument("--consumer", metavar="NAME",
                   help="consumer name in the group (default HOST-PID); give the same name on "
                        "restart to take this consumer's pending entries back at once")
    b.add_argument("--claim-idle", type=float, default=30.0, metavar="S",
                   help="reclaim entries pending longer than S seconds with another consumer "
                        "(XAUTOCLAIM; default 30)")
    b.add_argument("--retention", default="100000", metavar="N|AGE",
                   help="stream trimming: N entries per stream (MAXLEN ~) or an age such as 90d "
                        "(MINID ~); keep more than the bundles' warm-up (default 100000)")
    b.add_argument("--history-bars", type=int, default=1000, metavar="N",
                   help="ingest on a fresh stream: candles published before the first decided "
                        "one, the engines' warm-up (>= the bundle's; default 1000)")
    b.add_argument("--batch", type=int, default=64, metavar="N",
                   help="engine/decide: read the next entry of up to N streams at once and "
                        "handle them as one batch (a candle close of N markets: one network "
                        "call per model); also the entries per stream taken back at start or "
                        "reclaimed at once (default 64)")
    b.add_argument("--bus-prefix", default="", metavar="P",
                   help="prefix of every key (several deployments on one Redis database)")
    b.add_argument("--latency-out", metavar="FILE",
                   help="decide: at exit, write each candle's latency (candle XADD -> decision "
                        "committed, seconds) as a JSON list")


def strategy_config(args: argparse.Namespace):
    from bt_lstm.cli.common import build_config

    return build_config(args)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet)

    if args.export:
        return run_cli(lambda: export_job(args))
    if args.bus or args.status or args.role:
        return run_cli(lambda: bus_job(args))
    missing = [f for f, v in (("--symbol", args.symbol), ("--timeframe", args.timeframe),
                              ("--models or --model-server", args.models or args.model_server))
               if not v]
    if missing:
        build_parser(prog).error(f"the following arguments are required: {', '.join(missing)}")

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


def export_job(args: argparse.Namespace) -> int:
    """--export: a PostgreSQL state's decisions and fills as the CSVs of a state folder."""
    if not (args.state or "").startswith(("postgresql://", "postgres://")):
        raise ValueError("--export reads a --state postgresql://... URL (a state folder holds "
                         "decisions.csv and fills.csv per market already)")
    from bt_lstm.live.run import export_pg_state

    out = Path(args.export)
    done = export_pg_state(args.state, out, strategy_config(args).strategy)
    if not done:
        print(f"no market in {args.state} yet: nothing written")
    for (symbol, tf), n_dec, n_fill in done:
        print(f"{symbol} {tf}: {n_dec} decisions, {n_fill} fills -> {out / f'{symbol}_{tf}'}")
    return 0


def bus_job(args: argparse.Namespace) -> int:
    """One role of the split pipeline, or --status."""
    if not args.bus:
        raise ValueError("--role and --status need --bus redis://HOST:6379/0")
    from bt_lstm.live.bus import BusConfig, bus_status, connect, format_status, parse_retention

    parse_retention(args.retention)
    if args.batch < 1:
        raise ValueError(f"--batch {args.batch}: give 1 or more streams per read")
    cfg = BusConfig(args.bus, prefix=args.bus_prefix, claim_idle_ms=int(args.claim_idle * 1000),
                    retention=args.retention, backoff_s=args.backoff, stop_after=args.stop_after,
                    batch=args.batch, freeze_gc=True)
    if args.consumer:
        cfg.consumer = args.consumer
    if args.status:
        print(format_status(bus_status(connect(args.bus), cfg)))
        return 0
    if not args.role:
        raise ValueError("--bus needs --role ingest|engine|decide (or --status)")
    symbols = [s.strip().upper() for s in (args.symbol or "").split(",") if s.strip()]
    only = [(s, args.timeframe) for s in symbols] if symbols and args.timeframe else None
    if args.role == "ingest":
        if not symbols or not args.timeframe:
            raise ValueError("--role ingest needs --symbol (comma separated) and --timeframe")
        from bt_lstm.live.roles import run_ingest

        pubs = run_ingest(cfg, symbols, args.timeframe,
                          {"ws_url": args.ws_url, "rest_url": args.rest_url,
                           "rest_tries": args.rest_tries, "backoff_s": args.backoff},
                          args.history_bars)
        for p in pubs:
            print(f"{p.symbol} {p.timeframe}: {p.acct['bars']} decided candles published, "
                  f"{p.feed_health['duplicates']} refused as duplicates")
        return 0
    if args.role == "engine":
        if not (args.models or args.models_root):
            raise ValueError("--role engine needs --models DIR or --models-root DIR")
        from bt_lstm.live.roles import run_engine

        scfg = strategy_config(args).strategy
        role = run_engine(cfg, args.models, args.models_root, only, scfg.no_skill, scfg.skill_p,
                          args.torch_threads)
        print(f"engine {cfg.consumer}: {role.counts}")
        return 0
    from bt_lstm.live.roles import run_decide

    role = run_decide(cfg, strategy_config(args).strategy, args.state or "live", only,
                      args.latency_out, args.status_port)
    print(f"decide {cfg.consumer}: {role.counts} (paper trading only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
