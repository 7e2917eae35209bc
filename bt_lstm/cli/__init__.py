"""The ``bt-lstm`` command: one subcommand per job, each parsed by its own module.

Belongs here: argparse (every flag defined once, in ``args.py``), terminal output, progress
bars (``progress.py``), exit codes (``common.py``), and the choice of strategy class handed to
the jobs. Does not: computation or data loading (jobs/, research/; ``jobs/datasets.py`` reads
a command's candles). Heavy libraries (torch, backtrader, pandas) are imported inside each
subcommand, so ``bt-lstm --help`` stays instant.
``python runners/<name>.py`` runs the same ``main`` as ``bt-lstm <name>``.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module under bt_lstm.cli, one line for `bt-lstm --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "backtest": ("backtest", "train (or reuse) regime models, backtest the test part, tearsheet"),
    "walk-forward": ("walk_forward", "retrain per fold, trade each test span out of sample"),
    "skillmap": ("skillmap", "walk-forward per feature set x horizon x target x market: where "
                 "is skill?"),
    "evaluate": ("evaluate", "score forecasts on test bars beside baselines (MSE, DM, IC ...)"),
    "lookahead": ("lookahead", "audit: does any output at bar t change without the bars after t?"),
    "download": ("download", "download or update candles: Binance archive or any ccxt exchange"),
    "tune": ("tune", "Optuna search on the training span, scored on its validation tail"),
    "dqn": ("dqn", "DQN trader with an LSTM Q-network (SB3): train, select, backtest, report"),
    "bench": ("bench", "speed benchmark: backtest, inference, training, memory -> bench.json"),
    "bench-truth": ("bench_truth", "known-truth benchmark on the synthetic market -> JSON"),
    "serve": ("serve", "model server (FastAPI): /v1/forecast, /v1/model, /v1/reload, health"),
    "live": ("live", "live PAPER trading on Binance klines, decisions identical to the backtest"),
    "replay": ("replay", "replay a CSV as a Binance kline WebSocket + REST feed (demo, tests)"),
}


def usage() -> str:
    """The text of ``bt-lstm --help``: every subcommand with its one line."""
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: bt-lstm <command> [flags]   (bt-lstm <command> --help for its flags)", "",
             "Regime-aware LSTM forecasters, backtested out of sample in Backtrader.", "",
             "commands:"]
    lines += [f"  {name:<{width}}{line}" for name, (_, line) in COMMANDS.items()]
    lines += ["", "Each command is also a script: bt-lstm walk-forward == "
                  "python runners/walk_forward.py"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bt-lstm`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a command is needed: the list of them, as an error
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from bt_lstm import __version__

        print(f"bt-lstm {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"bt-lstm: unknown command {name!r}{hint} (bt-lstm --help lists them)",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"bt_lstm.cli.{COMMANDS[name][0]}")
    return module.main(argv[1:], prog=f"bt-lstm {name}")
