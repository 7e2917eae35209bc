"""Shared command-line plumbing of every subcommand: argument groups, flags -> config, data
loading, progress bars and error handling (user mistakes: one line on stderr, exit code 2)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bt_lstm.config import (
    DEVICES,
    FEATURE_NAMES,
    NO_SKILL_POLICIES,
    REGIME_METHODS,
    PipelineConfig,
    replace,
)

if TYPE_CHECKING:  # pandas is imported where it is used: `download` never needs it
    import pandas as pd

_D = PipelineConfig()  # defaults shown in --help come from the config itself


def make_parser(doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser showing ``doc`` (examples keep their layout); ``prog`` names the command in
    usage lines (default: the script's file name, as ``python runners/x.py`` shows it)."""
    return argparse.ArgumentParser(prog=prog, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_data_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data (default: the bundled synthetic SAMPLE market)")
    g.add_argument("--symbol", metavar="S",
                   help="read <data-dir>/<S>_<timeframe>.csv, e.g. BTCUSDT -> data/BTCUSDT_4h.csv")
    g.add_argument("--timeframe", metavar="T",
                   help="bar length: 15m, 1h, 4h, 1d ... (--symbol default: 4h; with --csv it is "
                        "checked against the file's spacing)")
    g.add_argument("--csv", metavar="FILE",
                   help="a candle CSV: timestamp,open,high,low,close,volume (ISO-8601 or epoch "
                        "s/ms) or a Binance kline file")
    g.add_argument("--data-dir", metavar="DIR",
                   help="folder of <SYMBOL>_<timeframe>.csv files (default: $BT_LSTM_DATA_DIR or "
                        "data)")


def add_download_args(parser: argparse.ArgumentParser) -> None:
    """--download and --base-url: fetch a --symbol's candles before the job (backtest,
    walk-forward)."""
    g = parser.add_argument_group("download (with --symbol)")
    g.add_argument("--download", action="store_true",
                   help="first download <data-dir>/<SYMBOL>_<timeframe>.csv from Binance's "
                        "public archive when it is missing, or extend it when its last candle "
                        "is more than a day old (as `download` does); without it a missing file "
                        "is an error naming the download command (BTCUSDT 4h falls back to the "
                        "bundled snapshot)")
    g.add_argument("--base-url", metavar="URL",
                   help="with --download: archive root instead of https://data.binance.vision")


def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("pipeline (flags override --config; unset flags keep defaults)")
    g.add_argument("--config", metavar="JSON",
                   help="a config.json written by an earlier run (or edited by hand)")
    g.add_argument("--features", metavar="A,B,..",
                   help=f"comma-separated feature list, from: {', '.join(FEATURE_NAMES)}")
    g.add_argument("--regimes", choices=REGIME_METHODS,
                   help="regime classifier: rule (trailing volatility and trend, default), gmm "
                        "(Gaussian mixture), column (the CSV's own `regime` column)")
    g.add_argument("--trend-bars", type=int, metavar="N",
                   help=f"trailing window of the regime inputs (default {_D.regimes.trend_bars})")
    g.add_argument("--lookback", type=int, metavar="N",
                   help=f"bars per model window (default {_D.windows.lookback})")
    g.add_argument("--train-frac", type=float, metavar="F",
                   help=f"training share (default {_D.windows.train_frac})")
    g.add_argument("--val-frac", type=float, metavar="F",
                   help=f"validation share "
                        f"(default {_D.windows.val_frac}); the test part is the rest")
    g.add_argument("--model", metavar="ARCH",
                   help=f"architecture: lstm, gru, mlp, stacked_lstm, or one registered by "
                        f"--model-file (default {_D.model.arch})")
    g.add_argument("--model-file", metavar="PY",
                   help="your own architecture: a Python file that registers it with "
                        "@bt_lstm.models.register_model (see README); saved models record its "
                        "path and hash"),
    g.add_argument("--hidden-size", type=int, metavar="H",
                   help=f"hidden units (default {_D.model.hidden_size})")
    g.add_argument("--layers", type=int, metavar="K",
                   help=f"stacked layers (default {_D.model.num_layers})")
    g.add_argument("--dropout", type=float, metavar="P",
                   help=f"dropout between layers (default {_D.model.dropout})")
    g.add_argument("--epochs", type=int, metavar="N",
                   help=f"most epochs (default {_D.train.epochs})")
    g.add_argument("--batch-size", type=int, metavar="N",
                   help=f"mini-batch size (default {_D.train.batch_size})")
    g.add_argument("--lr", type=float, metavar="LR",
                   help=f"Adam learning rate (default {_D.train.lr})")
    g.add_argument("--patience", type=int, metavar="N",
                   help=f"early stopping: epochs without validation improvement "
                        f"(default {_D.train.patience})")
    g.add_argument("--min-regime-windows", type=int, metavar="N",
                   help=f"fewer training windows -> the regime uses a pooled model "
                        f"(default {_D.train.min_regime_windows})")
    g.add_argument("--seed", type=int, metavar="N", help=f"random seed (default {_D.train.seed})")
    g.add_argument("--device", choices=DEVICES, help=f"where to train (default {_D.train.device})")
    g.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (0: torch default)")
    s = parser.add_argument_group("strategy and costs")
    s.add_argument("--threshold", type=float, metavar="X",
                   help=f"|forecast| (next-bar log return) needed to hold a position "
                        f"(default {_D.strategy.threshold})")
    s.add_argument("--long-only", action="store_true", default=None, help="never go short")
    s.add_argument("--fraction", type=float, metavar="F",
                   help=f"fraction of equity per position "
                        f"(default {_D.strategy.position_fraction})")
    s.add_argument("--commission", type=float, metavar="F",
                   help=f"commission, fraction of notional (default {_D.strategy.commission})")
    s.add_argument("--slippage", type=float, metavar="F",
                   help=f"slippage, fraction of price (default {_D.strategy.slippage})")
    s.add_argument("--cash", type=float, metavar="X",
                   help=f"starting cash (default {_D.strategy.cash:g})")
    s.add_argument("--no-skill", choices=NO_SKILL_POLICIES,
                   help=f"a regime whose model showed no skill on its validation windows: flat "
                        f"(no position), pooled (the pooled model if it has skill, else flat) "
                        f"or trade (trade it anyway, for research) "
                        f"(default {_D.strategy.no_skill})")
    s.add_argument("--skill-p", type=float, metavar="P",
                   help=f"skill needs validation MSE below the zero forecast's with a one-sided "
                        f"Diebold-Mariano p-value at most P (default {_D.strategy.skill_p})")
    t = parser.add_argument_group("trials (the N of the deflated Sharpe ratio)")
    t.add_argument("--trials-tried", type=int, metavar="N",
                   help="configurations you tried by hand before this one; the deflated Sharpe "
                        "ratio discounts the result for them (default: 1, or the tuning study's "
                        "count recorded in --config)")
    t.add_argument("--trials-sharpe-var", type=float, metavar="V",
                   help="variance of those trials' annualised Sharpes (default: unknown; the "
                        "sampling variance of a zero Sharpe over the test days is used)")


def add_seed_args(group: argparse._ArgumentGroup) -> None:
    """--seeds and --ensemble: train every model with K seeds and report their spread."""
    group.add_argument("--seeds", type=int, default=1, metavar="K",
                       help="train every model with seeds seed .. seed+K-1 and report each "
                            "seed's out-of-sample Sharpe, return and MSE ratio to zero with "
                            "mean +- std (default 1)")
    group.add_argument("--ensemble", choices=("none", "mean"), default="none",
                       help="none: trade the first seed's models; mean: trade the mean forecast "
                            "of the K seeds' models (default none)")


MAIN_JOB_MODELS = ("where the main job keeps its models (default: models); models for this "
                   "data and config are trained first if none are saved")


def add_output_args(group: argparse._ArgumentGroup, reports: str, models: str | None = None,
                    tearsheet: str | None = None, quiet: str = "no progress bars, warnings only"
                    ) -> None:
    """--models-dir (when ``models`` gives its help), --reports-dir, --no-tearsheet (when
    ``tearsheet`` gives its help) and --quiet: the output flags every job shares."""
    if models is not None:
        group.add_argument("--models-dir", default="models", metavar="DIR", help=models)
    group.add_argument("--reports-dir", default="reports", metavar="DIR", help=reports)
    if tearsheet is not None:
        group.add_argument("--no-tearsheet", action="store_true", help=tearsheet)
    group.add_argument("--quiet", action="store_true", help=quiet)


# flag -> (config section, field)
_FLAG_FIELDS = {
    "regimes": ("regimes", "method"), "trend_bars": ("regimes", "trend_bars"),
    "lookback": ("windows", "lookback"), "train_frac": ("windows", "train_frac"),
    "val_frac": ("windows", "val_frac"), "model": ("model", "arch"),
    "hidden_size": ("model", "hidden_size"), "layers": ("model", "num_layers"),
    "dropout": ("model", "dropout"), "model_file": ("model", "model_file"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "patience": ("train", "patience"), "min_regime_windows": ("train", "min_regime_windows"),
    "seed": ("train", "seed"), "device": ("train", "device"), "threads": ("train", "threads"),
    "threshold": ("strategy", "threshold"), "long_only": ("strategy", "long_only"),
    "fraction": ("strategy", "position_fraction"), "commission": ("strategy", "commission"),
    "slippage": ("strategy", "slippage"), "cash": ("strategy", "cash"),
    "no_skill": ("strategy", "no_skill"), "skill_p": ("strategy", "skill_p"),
    "trials_tried": ("provenance", "n_trials"),
    "trials_sharpe_var": ("provenance", "trials_sharpe_var"),
}


def build_config(args: argparse.Namespace) -> PipelineConfig:
    """Defaults, then --config, then every flag the user gave."""
    cfg = PipelineConfig()
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"--config {path}: no such file")
        cfg = PipelineConfig.from_json(path.read_text())
    changes: dict[str, dict] = {}
    for flag, (section, name) in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            changes.setdefault(section, {})[name] = value
    if getattr(args, "features", None):
        names = tuple(n.strip() for n in args.features.split(",") if n.strip())
        changes.setdefault("features", {})["names"] = names
    if "n_trials" in changes.get("provenance", {}):  # the user's own declaration
        changes["provenance"].update(origin="declared", study=None)
    if "model_file" in changes.get("model", {}):  # bundles must find it from any folder
        changes["model"]["model_file"] = str(Path(changes["model"]["model_file"]).resolve())
    for section, fields in changes.items():
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **fields)})
    check_architecture(cfg)
    return cfg


def check_architecture(cfg: PipelineConfig) -> None:
    """Unknown architectures and broken model files fail here, before any data is read."""
    from bt_lstm.models.nets import build_model, model_hparams

    build_model(cfg.model.arch, len(cfg.features.names), model_hparams(cfg),
                cfg.model.model_file)


def timeframe_label(bar: pd.Timedelta) -> str:
    minutes = int(bar.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def load_dataset(args: argparse.Namespace, cfg: PipelineConfig, check_split: bool = True
                 ) -> tuple[pd.DataFrame, str, str]:
    """(candles, dataset name, timeframe label) from --csv, --symbol or the SAMPLE market.

    ``check_split``: refuse data too short for the main job's train/validation/test split
    (walk-forward checks its own fold plan instead).
    """
    from bt_lstm.data.candles import DataError, infer_bar, load_ohlcv, parse_timeframe
    from bt_lstm.data.synthetic import SAMPLE_NAME, make_sample
    from bt_lstm.research.pipeline import check_enough_bars

    if args.csv and args.symbol:
        raise DataError("give either --csv or --symbol, not both")
    if getattr(args, "download", False) and not args.symbol:
        raise DataError("--download needs --symbol (it fetches <SYMBOL>_<timeframe>.csv)")
    if getattr(args, "base_url", None) and not getattr(args, "download", False):
        raise DataError("--base-url applies to --download; add --download or drop it")
    if args.csv:
        frame, name = load_ohlcv(args.csv), Path(args.csv).stem
    elif args.symbol:
        tf = args.timeframe or "4h"
        parse_timeframe(tf)
        frame, name = load_symbol(args, tf), args.symbol.upper()
    else:
        if args.timeframe and parse_timeframe(args.timeframe) != parse_timeframe("4h"):
            raise DataError("the SAMPLE market is 4h; drop --timeframe or give --csv/--symbol")
        frame, name = make_sample().frame, SAMPLE_NAME
    if check_split:
        check_enough_bars(len(frame), cfg, name)
    bar = infer_bar(frame.index)
    label = timeframe_label(bar)
    if args.timeframe and parse_timeframe(args.timeframe) != bar:
        raise DataError(f"{name}: candles are {label} apart but --timeframe says "
                        f"{args.timeframe}; pass --timeframe {label}")
    if name.lower().endswith(f"_{label}"):  # BTCUSDT_4h.csv is dataset BTCUSDT, 4h bars
        name = name[: -len(label) - 1]
    return frame, name, label


def load_symbol(args: argparse.Namespace, tf: str) -> pd.DataFrame:
    """--symbol's candles: downloaded first with --download (when missing or stale), else the
    file in --data-dir, else the bundled snapshot (BTCUSDT 4h), else an error naming the exact
    download command."""
    from bt_lstm.data.candles import data_path, load_ohlcv, resolve_data_path
    from bt_lstm.data.snapshot import find_snapshot, load_snapshot

    path = data_path(args.symbol, tf, args.data_dir)
    if getattr(args, "download", False):
        from bt_lstm.cli.download import fetch_with_progress
        from bt_lstm.data.download import DownloadRequest, is_stale
        from bt_lstm.data.download.archive import DEFAULT_BASE_URL

        if is_stale(path, tf):
            req = DownloadRequest(args.symbol.upper(), tf, data_dir=str(path.parent),
                                  base_url=args.base_url or DEFAULT_BASE_URL)
            print(fetch_with_progress(req, quiet=args.quiet).summary(), file=sys.stderr)
        return load_ohlcv(path)
    snap = None if path.is_file() else find_snapshot(args.symbol, tf)
    if snap is not None:
        print(f"note: {snap.describe(args.data_dir)}", file=sys.stderr)
        return load_snapshot(snap)
    return load_ohlcv(resolve_data_path(args.symbol, tf, args.data_dir))


def trim_dates(frame: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    """The candles from ``start`` to ``end`` (inclusive; either may be None)."""
    import pandas as pd

    out = frame
    if start:
        out = out[out.index >= pd.Timestamp(start)]
    if end:
        out = out[out.index <= pd.Timestamp(end)]
    if len(out) < 2:
        raise ValueError(f"no candles between --start {start} and --end {end} "
                         f"(the data covers {frame.index[0]} to {frame.index[-1]})")
    return out


def setup_logging(quiet: bool, torch: bool = True) -> None:
    """Logging for a runner; also where every runner starts, so CUDA determinism is set here
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


def print_luck(metrics: dict) -> None:
    """The luck line, its plain reading and the seed spread (when there is one)."""
    from bt_lstm.backtest.reports import format_luck, format_seed_spread

    print(f"\n{format_luck(metrics['statistics'])}")
    print(metrics["statistics"]["reading"])
    spread = metrics.get("seed_spread")
    if spread:
        print(f"\n{len(spread['runs'])} seeds (ensemble {spread['ensemble']}), out of sample:")
        print(format_seed_spread(spread))


def run_cli(job: Callable[[], int]) -> int:
    """Run ``job``; user mistakes become one line on stderr and exit code 2."""
    try:
        return job()
    except (ValueError, TypeError, FloatingPointError, OSError) as exc:  # incl. ArtifactError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: saved models and reports are left as they were before this run",
              file=sys.stderr)
        return 130


def config_from_file(path: str | None) -> PipelineConfig:
    """The default config, or the one saved in ``path`` (a run's config.json)."""
    if not path:
        return PipelineConfig()
    if not Path(path).is_file():
        raise ValueError(f"--config {path}: no such file")
    return PipelineConfig.from_json(Path(path).read_text())


def main_job_models(args: argparse.Namespace, cfg: PipelineConfig, frame: pd.DataFrame,
                    dataset: str, timeframe: str):
    """The main job's saved models for this data and config, trained first if none match."""
    from bt_lstm.jobs.backtest import obtain_forecaster

    progress = TrainProgress(cfg.train.epochs, disable=args.quiet)
    try:
        forecaster, _ = obtain_forecaster(
            frame, cfg, Path(args.models_dir) / f"{dataset}_{timeframe}", False,
            progress.factory)
    finally:
        progress.close()
    return forecaster


class TrainProgress:
    """One tqdm bar per trained model (epochs, losses), on stderr."""

    def __init__(self, epochs: int, disable: bool = False) -> None:
        self.epochs, self.disable, self.bar = epochs, disable, None

    def factory(self, name: str, n_train: int, n_val: int):
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(total=self.epochs, desc=f"train {name} ({n_train} windows)",
                        unit="epoch", disable=self.disable, file=sys.stderr, leave=True)

        def update(epoch: int, n: int, train_loss: float, val_loss: float, best: float) -> None:
            self.bar.update(1)
            self.bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}",
                                 best=f"{best:.3f}")
        return update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
