"""How every subcommand runs: parse (one-line flag errors), logging, the job, and user
mistakes turned into one line on stderr with exit code 2; plus the pieces several commands
print or obtain the same way (the luck lines, the data source, the main job's models)."""
from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import TYPE_CHECKING, Any, Callable

from bt_lstm.cli.flag import CommandParser, FlagError

if TYPE_CHECKING:  # pandas is imported where it is used: `download` never needs it
    import pandas as pd

    from bt_lstm.config import PipelineConfig
    from bt_lstm.jobs.datasets import DataSource


def make_parser(doc: str | None, prog: str | None = None) -> CommandParser:
    """A parser showing ``doc`` (examples keep their layout); ``prog`` names the command in
    usage lines (default: the script's file name, as ``python runners/x.py`` shows it)."""
    return CommandParser(prog=prog, description=doc,
                         formatter_class=argparse.RawDescriptionHelpFormatter)


def setup_logging(quiet: bool, torch: bool = True) -> None:
    """Logging for a command; also where every command starts, so CUDA determinism is set here
    (``torch=False``: a command that never trains, such as download, skips importing torch)."""
    if torch:
        from bt_lstm.models.training import configure_determinism

        configure_determinism()
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    # matplotlib (inside QuantStats) logs a line per missing font; not the user's concern.
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    # Dask (walk-forward --scheduler) logs every connection at INFO.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    # numexpr (pandas uses it once installed, e.g. by the [freqtrade] extra) logs its thread
    # count at INFO on first use: a second line under a one-line error.
    logging.getLogger("numexpr").setLevel(logging.WARNING)


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None,
            job: Callable[[argparse.Namespace], int], torch: bool = True,
            quiet: bool | None = None) -> int:
    """Parse ``argv``, set up logging and run ``job(args)``; a bad flag or a user mistake
    becomes one line on stderr and exit code 2 (``quiet``: force the log level)."""
    try:
        args = parser.parse_args(argv)
    except FlagError as exc:
        return _fail(str(exc))
    setup_logging(getattr(args, "quiet", False) if quiet is None else quiet, torch=torch)
    try:
        return job(args)
    except FlagError as exc:
        return _fail(str(exc))
    except (ValueError, TypeError, FloatingPointError, OSError) as exc:  # incl. ArtifactError
        return _fail(user_message(exc, args, parser))
    except KeyboardInterrupt:
        print("interrupted: saved models and reports are left as they were before this run",
              file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def user_message(exc: BaseException, args: argparse.Namespace | None,
                 parser: argparse.ArgumentParser) -> str:
    """One line for ``exc``: config fields named as the flag (or --config key) they came from,
    and no flag suggested that this command does not have."""
    from bt_lstm.cli.args import describe_config_error
    from bt_lstm.config import ConfigError

    if isinstance(exc, ConfigError):
        return describe_config_error(exc, args)
    text = str(exc).strip()
    msg = text.splitlines()[0] if text else type(exc).__name__
    options = {o for a in parser._actions for o in a.option_strings}
    if "--retrain" not in options:  # e.g. serve, live: training is another command's work
        if "--retrain" in msg:  # bare: this command's flag; after backtest(.py): that one's
            msg = msg.replace("retrain with --retrain", "train new models with --retrain")
            msg = re.sub(r"(?<!backtest )(?<!backtest\.py )--retrain",
                         "`bt-lstm backtest --retrain`", msg)
        elif type(exc).__name__ == "ArtifactError" and "train the models again" in msg:
            msg = msg.replace("train the models again",
                              "train new models with `bt-lstm backtest --retrain`")
    elif type(exc).__name__ == "ArtifactError":
        msg = msg.replace("train the models again", "train them again with --retrain")
    return msg


def data_source(args: argparse.Namespace) -> DataSource:
    """The data flags of a command as a ``DataSource``."""
    from bt_lstm.jobs.datasets import DataSource

    csv = args.csv[0] if isinstance(args.csv, list) and len(args.csv) == 1 else args.csv
    return DataSource(csv=csv, symbol=args.symbol, timeframe=args.timeframe,
                      data_dir=args.data_dir, download=getattr(args, "download", False),
                      base_url=getattr(args, "base_url", None))


def market_sources(args: argparse.Namespace) -> list[DataSource]:
    """One source per market of the command's data flags (``--csv`` repeated, ``--symbols``)."""
    from dataclasses import replace

    from bt_lstm.jobs.datasets import market_sources as sources

    csvs = args.csv if isinstance(args.csv, list) else None
    src = replace(data_source(args), csv=None) if csvs is not None else data_source(args)
    return sources(src, csvs, getattr(args, "symbols", None))


def load_markets(args: argparse.Namespace, cfg: PipelineConfig
                 ) -> tuple[dict[str, pd.DataFrame], str]:
    """(market -> candles, timeframe) of several markets' data flags, as ``load_data``."""
    from bt_lstm.cli.progress import fetch_with_progress
    from bt_lstm.jobs.datasets import load_markets as load

    quiet = getattr(args, "quiet", False)
    return load(market_sources(args), cfg,
                fetch=lambda req: fetch_with_progress(req, quiet=quiet),
                notify=lambda line: print(line, file=sys.stderr))


def load_data(args: argparse.Namespace, cfg: PipelineConfig, check_split: bool = True
              ) -> tuple[pd.DataFrame, str, str]:
    """(candles, dataset, timeframe) of the command's data flags; a --download runs behind a
    progress bar and notes go to stderr."""
    from bt_lstm.cli.progress import fetch_with_progress
    from bt_lstm.jobs.datasets import load_dataset

    quiet = getattr(args, "quiet", False)
    return load_dataset(data_source(args), cfg, check_split,
                        fetch=lambda req: fetch_with_progress(req, quiet=quiet),
                        notify=lambda line: print(line, file=sys.stderr))


def print_luck(metrics: dict) -> None:
    """The luck line, its plain reading and the seed spread (when there is one)."""
    from bt_lstm.backtest.reports import format_luck, format_seed_spread

    print(f"\n{format_luck(metrics['statistics'])}")
    print(metrics["statistics"]["reading"])
    spread = metrics.get("seed_spread")
    if spread:
        print(f"\n{len(spread['runs'])} seeds (ensemble {spread['ensemble']}), out of sample:")
        print(format_seed_spread(spread))


def main_job_models(args: argparse.Namespace, cfg: PipelineConfig, frame: pd.DataFrame,
                    dataset: str, timeframe: str) -> Any:
    """The main job's saved models for this data and config, trained first if none match."""
    from pathlib import Path

    from bt_lstm.cli.progress import TrainProgress
    from bt_lstm.jobs.backtest import obtain_forecaster

    progress = TrainProgress(cfg.train.epochs, disable=args.quiet)
    try:
        forecaster, _ = obtain_forecaster(
            frame, cfg, Path(args.models_dir) / f"{dataset}_{timeframe}", False,
            progress.factory)
    finally:
        progress.close()
    return forecaster
