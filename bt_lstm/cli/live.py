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
several engine or decide processes sharing the work (see docs/guides/bus.md):
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

from bt_lstm.cli.args import STRATEGY, add_flags, add_group, build_config
from bt_lstm.cli.common import make_parser, run_cli
from bt_lstm.cli.flag import FlagError

BUS = ("bus", "role", "status", "models_root", "torch_threads", "consumer", "claim_idle",
       "retention", "history_bars", "batch", "bus_prefix", "latency_out")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm live`` (``prog``: the name its usage lines show; default
    the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    m = add_group(parser, "market and models", "symbol", "timeframe")
    src = m.add_mutually_exclusive_group()
    add_flags(src, "models", "model_server")
    add_group(parser, "feed", "ws_url", "rest_url", "backoff", "rest_tries", "cross_wait")
    add_group(parser, "run", "state", "stop_after", "status_port", "export", "quiet")
    add_group(parser, "bus: the pipeline split over Redis Streams", *BUS)
    add_group(parser, "strategy and costs (as the backtest's; default: its defaults)",
              "config", *STRATEGY)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm live`` with ``argv`` (default: the process's arguments); return the exit
    code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, job, torch=needs_torch)


def needs_torch(args: argparse.Namespace) -> bool:
    """Only the in-process pipeline and the engine role run networks: the ingest and decide
    roles, ``--status`` and ``--export`` never import torch (a killed role is back sooner:
    importing torch took 1.2-3 s of a restart, measured in the soak, and ~150 MB of RSS)."""
    if args.export or args.status:
        return False
    return not (args.bus or args.role) or args.role == "engine"


def job(args: argparse.Namespace) -> int:
    """Run live paper trading as the flags say: the in-process pipeline, one bus role
    (``--role``), the bus status (``--status``) or an export of a PostgreSQL state
    (``--export``)."""
    if args.export:
        return export_job(args)
    if args.bus or args.status or args.role:
        return bus_job(args)
    missing = [f for f, v in (("--symbol", args.symbol), ("--timeframe", args.timeframe),
                              ("--models or --model-server", args.models or args.model_server))
               if not v]
    if missing:
        raise FlagError(f"the following arguments are required: {', '.join(missing)}")
    from bt_lstm.live.feed import FeedConfig, FeedError
    from bt_lstm.live.klines import timeframe_ms
    from bt_lstm.live.run import build_engine, run_feed

    cfg = build_config(args)
    symbol = args.symbol.upper()
    state = Path(args.state or Path("live") / f"{symbol}_{args.timeframe}")
    engine = build_engine(symbol, args.timeframe, cfg.strategy, state, models=args.models,
                          model_server=args.model_server, no_skill=cfg.strategy.no_skill,
                          skill_p=cfg.strategy.skill_p)
    feed_cfg = FeedConfig(symbol, args.timeframe, timeframe_ms(args.timeframe),
                          ws_url=args.ws_url, rest_url=args.rest_url,
                          rest_tries=args.rest_tries, backoff_s=args.backoff,
                          stop_after=args.stop_after, cross_wait_s=args.cross_wait)
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


def export_job(args: argparse.Namespace) -> int:
    """--export: a PostgreSQL state's decisions and fills as the CSVs of a state folder."""
    if not (args.state or "").startswith(("postgresql://", "postgres://")):
        raise ValueError("--export reads a --state postgresql://... URL (a state folder holds "
                         "decisions.csv and fills.csv per market already)")
    from bt_lstm.live.run import export_pg_state

    out = Path(args.export)
    done = export_pg_state(args.state, out, build_config(args, check_model=False).strategy)
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
        from bt_lstm.live.ingest import run_ingest

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

        scfg = build_config(args).strategy
        role = run_engine(cfg, args.models, args.models_root, only, scfg.no_skill, scfg.skill_p,
                          args.torch_threads)
        print(f"engine {cfg.consumer}: {role.counts}")
        return 0
    from bt_lstm.live.roles import run_decide

    role = run_decide(cfg, build_config(args, check_model=False).strategy,
                      args.state or "live", only, args.latency_out, args.status_port)
    print(f"decide {cfg.consumer}: {role.counts} (paper trading only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
