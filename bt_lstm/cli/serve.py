"""Model server: FastAPI + uvicorn around a model bundle (the backtest's Forecaster).

GET /health/live, /health/ready, /v1/model, / (a page on the bundle); POST /v1/forecast
(candles as JSON -> regime, label, forecast, model, bundle id; bad input -> 422 naming the
field) and POST /v1/reload (bearer token from $BT_LSTM_RELOAD_TOKEN; a tampered or incompatible
bundle is refused and the old one keeps serving). A tampered --models refuses to start.

Examples
--------
    python runners/serve.py --models models/BTCUSDT_4h --port 8000
    python runners/serve.py --models models/BTCUSDT_4h --workers 2     # one per core
    curl -s http://127.0.0.1:8000/v1/model
"""
from __future__ import annotations

import argparse
import sys

from bt_lstm.cli.args import add_flags
from bt_lstm.cli.common import make_parser, run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm serve`` (``prog``: the name its usage lines show; default
    the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_flags(parser, "models", "host", "port", "no_skill", "skill_p", "threads", "workers",
              "quiet", models={"required": True}, port={"default": 8000},
              no_skill={"default": "flat"}, threads={"default": 1})
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm serve`` with ``argv`` (default: the process's arguments); return the exit
    code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, job)


def job(args: argparse.Namespace) -> int:
    """Load, check and warm up the model bundle, then serve it with uvicorn until interrupted."""
    import json
    import os

    import uvicorn

    from bt_lstm.live.server import SERVE_ENV, create_app, load_bundle
    from bt_lstm.models.training import configure_threads

    configure_threads(args.threads)
    log_level = "warning" if args.quiet else "info"
    if args.workers == 1:
        app = create_app(args.models, args.no_skill, args.skill_p)
        print(f"serving {args.models} on http://{args.host}:{args.port}/", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level=log_level)
        return 0
    load_bundle(args.models, args.no_skill, args.skill_p)  # refuse a bad bundle here, once
    os.environ[SERVE_ENV] = json.dumps({
        "models": args.models, "no_skill": args.no_skill, "skill_p": args.skill_p,
        "threads": args.threads, "workers": args.workers})
    print(f"serving {args.models} on http://{args.host}:{args.port}/ "
          f"({args.workers} workers)", flush=True)
    uvicorn.run("bt_lstm.live.server:app_from_env", factory=True, workers=args.workers,
                host=args.host, port=args.port, log_level=log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
