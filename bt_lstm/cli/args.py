"""Every flag of the ``bt-lstm`` command, defined once (after freqtrade's cli_options.py).

Each ``Flag`` holds its name, help, type, range, an example and the config field it sets; the
defaults in the help come from the config dataclasses themselves. A subcommand lists the flags
it uses (``add_flags(group, "symbol", "csv", ...)``) and never defines one of its own.
Flag values that reach a config are validated twice over: their range here (one line naming
the flag, before any work), and the config's own checks, whose ``ConfigError`` is mapped back
to the flag, or to the --config file's key, by ``describe_config_error``.
"""
from __future__ import annotations

import argparse
from typing import Any

from bt_lstm.cli.args_live import LIVE_FLAGS
from bt_lstm.cli.flag import Flag
from bt_lstm.config import (
    DEVICES,
    NO_SKILL_POLICIES,
    REGIME_METHODS,
    TARGETS,
    split_feature_spec,
)

F, I = float, int  # noqa: E741 - short names keep the table below readable
QUIET = "no progress bars; warnings and errors only"

_FLAGS: tuple[Flag, ...] = (
    # data
    Flag("--symbol", "read <data-dir>/<S>_<timeframe>.csv, e.g. BTCUSDT -> data/BTCUSDT_4h.csv; "
         "download and live: the market id (live --bus: several, comma separated)", metavar="S"),
    Flag("--timeframe", "bar length: 1m, 15m, 1h, 4h, 1d ... (--symbol default: 4h; with --csv "
         "it is checked against the file's spacing)", metavar="T"),
    Flag("--csv", "a candle CSV: timestamp,open,high,low,close,volume (ISO-8601 or epoch s/ms) or "
         "a Binance kline file (backtest, walk-forward: repeat it for several markets, one "
         "portfolio; skillmap: repeat it, one row per market)", metavar="FILE"),
    Flag("--symbols", "several markets in one run, comma separated, each read as --symbol is: "
         "one panel of models and one portfolio backtest (see docs/guides/portfolio.md); "
         "skillmap: the markets axis of the map, one row per market (docs/guides/skillmap.md)",
         metavar="A,B,..", example="BTCUSDT,ETHUSDT"),
    Flag("--data-dir", "folder of <SYMBOL>_<timeframe>.csv files (default: $BT_LSTM_DATA_DIR or "
         "data)", metavar="DIR"),
    Flag("--start", "first date used, UTC (e.g. 2019-01-01); download: first day fetched for a "
         "new file (a stored file is always continued from its last candle)", metavar="DATE"),
    Flag("--end", "last date used, inclusive, UTC (download default: up to the last closed "
         "candle)", metavar="DATE"),
    # several markets
    Flag("--panel", "several markets: pooled trains each regime's network on all markets' "
         "windows (scaler and regimes per market); per-market trains one bundle per market "
         "(skillmap: pooled runs one panel walk-forward per setting over all markets, "
         "per-market each market's own walk-forward)",
         choices=("pooled", "per-market"), default="pooled"),
    Flag("--allocation", "several markets: each market's target share of --fraction; equal, "
         "or inverse-vol (inverse of trailing volatility, causal)",
         choices=("equal", "inverse-vol"), default="equal"),
    # download
    Flag("--download", "first download <data-dir>/<SYMBOL>_<timeframe>.csv from Binance's public "
         "archive when it is missing, or extend it when its last candle is more than a day old "
         "(as `download` does); without it a missing file is an error naming the download "
         "command (BTCUSDT 4h falls back to the bundled snapshot)", kind=None, default=False),
    Flag("--base-url", "archive root instead of https://data.binance.vision (a mirror, or a "
         "local server in tests)", metavar="URL"),
    Flag("--source", "binance-archive: Binance spot's public kline zips (default with --exchange "
         "binance); ccxt: the exchange's REST API through ccxt (default for any other "
         "--exchange)", choices=("binance-archive", "ccxt")),
    Flag("--exchange", "ccxt exchange id: binance, bybit, kraken, okx ...", metavar="NAME",
         default="binance"),
    Flag("--columns", "ohlcv: timestamp,open,high,low,close,volume; all: also Binance's "
         "quote_volume, trades, taker_buy_base, taker_buy_quote (the `flow` feature group "
         "reads them; archive source only)", choices=("ohlcv", "all"), default="ohlcv"),
    Flag("--api-url", "with --source ccxt: send the exchange's API requests to this scheme and "
         "host instead (a proxy, a mirror, a local server in tests)", metavar="URL"),
    # pipeline
    Flag("--config", "a config.json written by an earlier run (or edited by hand); pipeline flags "
         "given override it", metavar="JSON"),
    Flag("--features", "what the networks see: feature groups, their columns concatenated in "
         "order: price (the 7 price features), calendar (hour of day, day of week), flow "
         "(taker-buy share, trade-count z-score: a file downloaded with --columns all), "
         "htf:TF (the price features on completed TF candles, e.g. htf:1d), cross:SYMBOL "
         "(another market's price features, e.g. cross:BTCUSDT), FILE.py:FUNCTION (your own, "
         "checked for look-ahead; see docs/guides/features.md); price feature names "
         "(log_ret, rsi ...) choose the price group's columns", kind="features",
         metavar="G,G,..", field="features.groups", example="price,calendar,htf:1d"),
    Flag("--regimes", "regime classifier: rule (trailing volatility and trend), gmm (Gaussian "
         "mixture), column (the CSV's own `regime` column)", choices=REGIME_METHODS,
         field="regimes.method"),
    Flag("--trend-bars", "trailing window of the regime inputs", I, "N",
         field="regimes.trend_bars", lo=2, example="45"),
    Flag("--lookback", "bars per model window", I, "N", field="windows.lookback", lo=1,
         example="32"),
    Flag("--target", "what the networks forecast over --horizon bars: logret (the log return) or "
         "vol-scaled (that return divided by the trailing volatility known at t); "
         "--threshold and the skill guard work in its units", choices=TARGETS,
         field="windows.target"),
    Flag("--horizon", "bars ahead the target looks (the purge gap between training, validation "
         "and test is raised to at least this)", I, "K", field="windows.horizon", lo=1,
         example="3"),
    Flag("--train-frac", "training share", F, "F", field="windows.train_frac", lo=0, hi=1,
         lo_open=True, hi_open=True, example="0.7"),
    Flag("--val-frac", "validation share; the test part is the rest", F, "F",
         field="windows.val_frac", lo=0, hi=1, lo_open=True, hi_open=True, example="0.15"),
    Flag("--model", "architecture: lstm, gru, mlp, stacked_lstm, or one registered by "
         "--model-file", metavar="ARCH", field="model.arch", example="gru"),
    Flag("--model-file", "your own architecture: a Python file that registers it with "
         "@bt_lstm.models.register_model (see docs/guides/architectures.md); saved models "
         "record its path and hash",
         metavar="PY", field="model.model_file"),
    Flag("--hidden-size", "hidden units", I, "H", field="model.hidden_size", lo=1, example="32"),
    Flag("--layers", "stacked layers", I, "K", field="model.num_layers", lo=1, example="2"),
    Flag("--dropout", "dropout between layers", F, "P", field="model.dropout", lo=0, hi=1,
         hi_open=True, example="0.1"),
    Flag("--epochs", "most epochs", I, "N", field="train.epochs", lo=1, example="30"),
    Flag("--batch-size", "mini-batch size", I, "N", field="train.batch_size", lo=1,
         example="256"),
    Flag("--lr", "Adam learning rate", F, "LR", field="train.lr", lo=0, hi=1, lo_open=True,
         example="0.002"),
    Flag("--patience", "early stopping: epochs without validation improvement", I, "N",
         field="train.patience", lo=1, example="5"),
    Flag("--min-regime-windows", "fewer training windows -> the regime uses a pooled model", I,
         "N", field="train.min_regime_windows", lo=1, example="200"),
    Flag("--seed", "random seed", I, "N", field="train.seed", lo=0, example="7"),
    Flag("--device", "where to train", choices=DEVICES, field="train.device"),
    Flag("--threads", "torch CPU threads (0 leaves torch's choice)", I, "N", field="train.threads",
         lo=0, example="1"),
    # strategy and costs
    Flag("--threshold", "|forecast| needed to hold a position, in the target's units (log "
         "return; a z-score with --target vol-scaled)", F, "X",
         field="strategy.threshold", lo=0, hi=1, example="0.002"),
    Flag("--long-only", "never go short", kind=None, field="strategy.long_only"),
    Flag("--fraction", "fraction of equity per position", F, "F",
         field="strategy.position_fraction", lo=0, hi=1, lo_open=True, example="0.5"),
    Flag("--commission", "commission, fraction of notional", F, "F",
         field="strategy.commission", lo=0, hi=0.1, example="0.001"),
    Flag("--slippage", "slippage, fraction of price", F, "F", field="strategy.slippage", lo=0,
         hi=0.1, example="0.0005"),
    Flag("--cash", "starting cash", F, "X", field="strategy.cash", lo=0, hi=1e15, lo_open=True,
         example="10000"),
    Flag("--no-skill", "a regime whose model showed no skill on its validation windows: flat (no "
         "position), pooled (the pooled model if it has skill, else flat) or trade (trade it "
         "anyway, for research)", choices=NO_SKILL_POLICIES, field="strategy.no_skill"),
    Flag("--skill-p", "skill needs validation MSE below the zero forecast's with a one-sided "
         "Diebold-Mariano p-value at most P", F, "P", field="strategy.skill_p", lo=0, hi=1,
         lo_open=True, example="0.05"),
    # trials (the N of the deflated Sharpe ratio)
    Flag("--trials-tried", "configurations you tried by hand before this one; the deflated Sharpe "
         "ratio discounts the result for them (default: 1, or the tuning study's count "
         "recorded in --config)", I, "N", field="provenance.n_trials", lo=1, example="10"),
    Flag("--trials-sharpe-var", "variance of those trials' annualised Sharpes (default: unknown; "
         "the sampling variance of a zero Sharpe over the test days is used)", F, "V",
         field="provenance.trials_sharpe_var", lo=0, hi=1e6, example="0.25"),
    # seeds
    Flag("--seeds", "train K models or agents (seeds seed .. seed+K-1) and report each seed's "
         "out-of-sample figures (Sharpe, return; models: MSE ratio to zero) and their spread",
         I, "K", default=1, lo=1, example="3"),
    Flag("--ensemble", "none: trade the first seed's models; mean: trade the mean forecast of the "
         "K seeds' models", choices=("none", "mean"), default="none"),
    # run and output
    Flag("--retrain", "train again (and replace saved models or agents) even when ones for this "
         "data and config are saved", kind=None, default=False),
    Flag("--inference", "batch: forecasts computed for all bars at once, then read bar by bar "
         "(fast, identical); per_bar: the strategy runs the model in every bar (slow, as in live "
         "trading)", choices=("batch", "per_bar"), default="batch"),
    Flag("--jobs", "local worker processes (backtest: the --seeds' models; walk-forward: folds x "
         "regimes x seeds, identical results to 1; tune: trial workers, only 1 is "
         "reproducible)", I, "N", default=1, lo=1, example="2"),
    Flag("--models-dir", "where model bundles are kept and reused; models for this data and "
         "config are trained first if none are saved", metavar="DIR", default="models"),
    Flag("--reports-dir", "the folder each run's report folder is written under", metavar="DIR",
         default="reports"),
    Flag("--no-tearsheet", "skip the HTML tearsheet (metrics.json is still written)",
         kind=None, default=False),
    Flag("--quiet", QUIET, kind=None, default=False),
    Flag("--out", "where the JSON goes", metavar="FILE"),
    Flag("--label", "free text stored in the JSON (e.g. 'before')", metavar="TEXT", default=""),
)
_COMMAND_FLAGS: tuple[Flag, ...] = (
    # walk-forward
    Flag("--train", "training span per fold, as a duration (365d, 8w, 6h) or a number of bars; "
         "its last --val-frac is the validation tail (default 365d)", metavar="SPAN"),
    Flag("--test", "test span per fold, duration or bars: how long each fold's models trade "
         "before the next retraining (default 90d)", metavar="SPAN"),
    Flag("--step", "distance between fold starts; must equal --test, so test spans tile the "
         "evaluated period (default: --test)", metavar="SPAN"),
    Flag("--train-bars", "training span in bars (instead of --train)", I, "N", lo=1,
         example="2190"),
    Flag("--test-bars", "test span in bars (instead of --test)", I, "N", lo=1, example="540"),
    Flag("--mode", "rolling: each fold trains on the span before its test; expanding: on all "
         "bars before it", choices=("rolling", "expanding"), default="rolling"),
    Flag("--embargo", "extra bars (or duration) skipped after the purge gap before each test "
         "span (the purge gap itself is windows.gap_bars of the config, >= the horizon, set "
         "through --config)", metavar="SPAN", default="0"),
    Flag("--scheduler", "run the training tasks on an existing Dask distributed cluster, e.g. "
         "tcp://10.0.0.5:8786 (needs `pip install distributed`)", metavar="ADDRESS"),
    Flag("--run-id", "name of the run folder under --reports-dir (default "
         "wf_<DATASET>_<timeframe>/<UTC time>, with latest beside it); never overwritten",
         metavar="ID"),
    Flag("--resume", "finish an interrupted run (wf_<DATASET>_<tf>/<stamp>, or wf_<DATASET>_<tf> "
         "for its newest; skillmap: skillmap_<NAME>/<stamp>): reuse its config and data, skip "
         "the folds (skillmap: the cells) already done, tune as it was tuned; other "
         "data/fold/pipeline/tuning flags are not allowed",
         metavar="RUN_ID"),
    Flag("--force", "a run folder of that --run-id exists: move it aside to "
         "<run_id>.replaced-<UTC time> (never deleted) and start again", kind=None,
         default=False),
    Flag("--tune-trials", "nested tuning: an Optuna study of N trials inside every fold's "
         "training span before fitting it (0: no tuning)", I, "N", default=0, lo=0,
         example="20"),
    Flag("--space", "JSON search space replacing the default (see docs/guides/tune.md)",
         metavar="FILE"),
    # skillmap
    Flag("--grid-features", "the feature sets of the map: sets separated by ';', feature groups "
         "inside a set by ',' (each set as --features takes it)", metavar="SETS",
         default="price;price,calendar;price,htf:1d", example="'price;price,calendar'"),
    Flag("--horizons", "the target horizons of the map, in bars, comma separated (the purge gap "
         "is raised to each)", metavar="K,K,..", default="1,3,6", example="1,3,6"),
    Flag("--targets", "the targets of the map, comma separated: logret, vol-scaled",
         metavar="T,T,..", default="logret,vol-scaled", example="logret,vol-scaled"),
    # tune
    Flag("--trials", "trials per study (pooled, then one per regime), all workers together; a "
         "study that has them already runs none", I, "N", default=60, lo=1, example="60"),
    Flag("--study", "study name: the same name and storage resume or join the studies "
         "NAME-pooled, NAME-bearish, NAME-sideways, NAME-bullish (default: a hash of data, "
         "config, space and seed)", metavar="NAME"),
    Flag("--storage", "postgresql://user@host/db for workers on several machines (RDB with "
         "heartbeats); default: a journal file in the study folder", metavar="URL"),
    Flag("--no-prune", "train every trial to the end (default: median pruning per epoch)",
         kind=None, default=False),
    Flag("--heartbeat", "database storage: heartbeat every S seconds; a trial silent for 2*S is "
         "marked failed", I, "S", default=10, lo=1, example="10"),
    # evaluate, lookahead
    Flag("--run", "a walk-forward run folder (reports/<run_id>): score every fold's test span "
         "with that fold's models; data and config come from the run", metavar="DIR"),
    Flag("--cuts", "cut points spread over the data", I, "N", default=20, lo=2, example="40"),
    # dqn (fields of DQNConfig: the help shows its defaults)
    Flag("--qnet", "Q-network: lstm (LSTM 64 -> LSTM 32 -> Dense 64 -> 3) or dense (the "
         "feed-forward baseline)", choices=("lstm", "dense"), field="dqn.qnet"),
    Flag("--window", "bars per observation", I, "N", field="dqn.window", lo=2, example="50"),
    Flag("--observation", "price: the window's closes as log(close/last close) / the window's "
         "return std; pipeline: our scaled feature window (the scaler fitted on training bars)",
         choices=("price", "pipeline"), field="dqn.features"),
    Flag("--timesteps", "training env steps, one bar each", I, "N", field="dqn.timesteps", lo=1,
         example="30000"),
    Flag("--eval-every", "steps between validation episodes for model selection", I, "N",
         field="dqn.eval_every", lo=1, example="2000"),
    Flag("--learning-starts", "random steps before the first update", I, "N",
         field="dqn.learning_starts", lo=0, example="1000"),
    Flag("--envs", "training envs stepped together, staggered over the training span (actions "
         "of all in one batch; step counts are of all together; 1 = one env)", I, "N",
         field="dqn.envs", lo=1, example="4"),
    Flag("--allow-short", "Sell goes short, not flat", kind=None, field="dqn.allow_short"),
    Flag("--no-regime-lstm", "skip the regime-LSTM comparison (it trains the main job's models "
         "if none are saved)", kind=None, default=False),
    # bench, bench-truth
    Flag("--reps", "repetitions per figure; the median is reported", I, "N", default=5, lo=1,
         example="5"),
    Flag("--train-epochs", "epochs per training measurement", I, "N", default=3, lo=1,
         example="3"),
    Flag("--skip-rerun", "skip timing the cached rerun of `bt-lstm backtest`", kind=None,
         default=False),
    Flag("--dqn-steps", "DQN training steps timed per Q-network (LSTM, Dense) with DQNConfig's "
         "default training settings, after its random warm-up; 0 skips the DQN figures", I, "N",
         default=2000, lo=0, example="2000"),
    Flag("--markets", "bench only the portfolio backtest: 1, 4, 16 ... up to N copies of real "
         "markets (BTCUSDT, ETHUSDT 4h) in one run against the one-market backtest, time ratio "
         "(target <= markets x 1.2) and peak memory, to the JSON of --out",
         I, "N", lo=1, example="16"),
    Flag("--bars", "bars of the synthetic market (default 6570: the SAMPLE market)", I, "N",
         default=6570, lo=1, example="10000"),
)
FLAGS: dict[str, Flag] = {f.dest: f for f in (*_FLAGS, *_COMMAND_FLAGS, *LIVE_FLAGS)}
# the synthetic market's seed (bench-truth) is spelt --seed like the training seed it is not
MARKET_SEED = Flag("--seed", "seed of the synthetic market (default 42: the SAMPLE market)", I,
                   "N", default=42, lo=0, example="7")
# flag groups several commands list together
DATA = ("symbol", "timeframe", "csv", "data_dir")
MARKETS = ("symbols", "panel", "allocation")
DOWNLOAD = ("download", "base_url")
PIPELINE = ("config", "features", "target", "horizon", "regimes", "trend_bars", "lookback",
            "train_frac", "val_frac", "model", "model_file", "hidden_size", "layers", "dropout",
            "epochs", "batch_size", "lr", "patience", "min_regime_windows", "seed", "device",
            "threads")
STRATEGY = ("threshold", "long_only", "fraction", "commission", "slippage", "cash", "no_skill",
            "skill_p")
TRIALS = ("trials_tried", "trials_sharpe_var")
SEEDS = ("seeds", "ensemble")


def config_default(path: str) -> Any:
    """The default of a config field ("strategy.threshold"; "dqn.window": ``DQNConfig``)."""
    section, name = path.split(".")
    if section == "dqn":
        from bt_lstm.rl.spec import DQNConfig

        return getattr(DQNConfig, name)
    from bt_lstm.config import PipelineConfig

    return getattr(getattr(PipelineConfig(), section), name)


def add_flags(group: Any, *names: str, **overrides: dict[str, Any]) -> None:
    """Add the registry's flags ``names`` to a parser or argument group; ``overrides`` maps a
    name to {"required": ..., "default": ...} where a command needs one. A flag with a config
    field defaults to None (unset: the config's value stands) and shows the config's default."""
    for name in names:
        flag = FLAGS[name]
        shown = None
        if flag.field and flag.kind is not None and not flag.field.startswith("provenance"):
            shown = config_default(flag.field)
        elif flag.field and flag.choices:
            shown = config_default(flag.field)
        flag.add_to(group, shown, **overrides.get(name, {}))


def add_group(parser: argparse.ArgumentParser, title: str, *names: str,
              **overrides: dict[str, Any]) -> Any:
    """A titled argument group holding the registry's flags ``names``."""
    group = parser.add_argument_group(title)
    add_flags(group, *names, **overrides)
    return group


def add_pipeline_groups(parser: argparse.ArgumentParser) -> None:
    """The data-to-strategy flags every training command lists (pipeline, strategy, trials)."""
    add_group(parser, "pipeline (flags override --config; unset flags keep defaults)", *PIPELINE)
    add_group(parser, "strategy and costs", *STRATEGY)
    add_group(parser, "trials (the N of the deflated Sharpe ratio)", *TRIALS)


def config_flags() -> dict[str, Flag]:
    """dest -> flag of every flag that sets a ``PipelineConfig`` field."""
    return {d: f for d, f in FLAGS.items() if f.field and not f.field.startswith("dqn.")}


def given(args: argparse.Namespace, parser: argparse.ArgumentParser, names: Any) -> list[str]:
    """The options among ``names`` set to something other than their default, as typed."""
    return [FLAGS[n].option for n in names
            if n in FLAGS and getattr(args, n, None) not in (None, False, parser.get_default(n))]


def field_changes(args: argparse.Namespace, section_prefix: str = "") -> dict[str, dict]:
    """section -> {field: value} of every config flag the user gave."""
    changes: dict[str, dict] = {}
    for dest, flag in FLAGS.items():
        value = getattr(args, dest, None)
        if flag.field is None or value is None or not flag.field.startswith(section_prefix):
            continue
        section, name = flag.field.split(".")
        if flag.kind == "list":
            if not value:
                continue
            value = tuple(value.split(","))
        if flag.kind == "features":  # groups, and the price group's names when some are given
            names, value = split_feature_spec(value)
            if names is not None:
                changes.setdefault(section, {})["names"] = names
        changes.setdefault(section, {})[name] = value
    return changes


def flag_of_field(owner: str, name: str) -> Flag | None:
    """The flag that sets field ``name`` of config class ``owner`` ("StrategyConfig")."""
    section = SECTION_OF_CLASS.get(owner)
    return next((f for f in FLAGS.values() if f.field == f"{section}.{name}"), None)


SECTION_OF_CLASS = {"FeatureConfig": "features", "RegimeConfig": "regimes",
                    "WindowConfig": "windows", "ModelConfig": "model", "TrainConfig": "train",
                    "StrategyConfig": "strategy", "ProvenanceConfig": "provenance",
                    "DQNConfig": "dqn"}


def describe_config_error(exc: Any, args: argparse.Namespace | None) -> str:
    """A config's ``ConfigError`` in the user's words: the flag as typed when the value came
    from one, else the --config file's key, else the config's own message."""
    flag = flag_of_field(exc.owner, exc.name)
    if flag is not None and args is not None and getattr(args, flag.dest, None) is not None:
        typed = getattr(args, flag.dest)
        shown = f"{typed:g}" if isinstance(typed, float) else str(typed)
        return flag.refusal(shown).replace(f"expected {flag.allowed()}", f"expected {exc.allowed}")
    section = SECTION_OF_CLASS.get(exc.owner, exc.owner)
    config = getattr(args, "config", None) if args is not None else None
    where = f"{config}: key {section}.{exc.name}" if config else f"{section}.{exc.name}"
    also = f" (or the flag {flag.option})" if flag is not None else ""
    return f"{where}={exc.value!r} is invalid: expected {exc.allowed}{also}"


def read_config(path: str | None) -> Any:
    """The default ``PipelineConfig``, or the one saved in ``path`` (a run's config.json)."""
    from pathlib import Path

    from bt_lstm.config import PipelineConfig

    if not path:
        return PipelineConfig()
    if not Path(path).is_file():
        raise ValueError(f"--config {path}: no such file")
    return PipelineConfig.from_json(Path(path).read_text())


def build_config(args: argparse.Namespace, check_model: bool = True) -> Any:
    """Defaults, then --config, then every config flag the user gave (``check_model``: build
    the architecture once to refuse a bad one early; a command that never runs a network,
    such as the bus's decide role, skips it and never imports torch)."""
    from pathlib import Path

    from bt_lstm.config import replace

    cfg = read_config(getattr(args, "config", None))
    changes = {s: c for s, c in field_changes(args).items() if s != "dqn"}
    if "n_trials" in changes.get("provenance", {}):  # the user's own declaration
        changes["provenance"].update(origin="declared", study=None)
    if "model_file" in changes.get("model", {}):  # bundles must find it from any folder
        changes["model"]["model_file"] = str(Path(changes["model"]["model_file"]).resolve())
    if "groups" in changes.get("features", {}):  # plugins, too, from any folder
        changes["features"]["groups"] = resolve_plugin_paths(changes["features"]["groups"])
    if "horizon" in changes.get("windows", {}):  # the purge gap follows a longer horizon
        gap = changes["windows"].get("gap_bars", cfg.windows.gap_bars)
        changes["windows"]["gap_bars"] = max(gap, changes["windows"]["horizon"])
    for section, values in changes.items():
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
    if check_model:
        check_architecture(cfg)
    return cfg


def resolve_plugin_paths(groups: tuple[str, ...]) -> tuple[str, ...]:
    """Feature groups with each plugin's file made absolute (``FILE.py:FUNCTION``)."""
    from pathlib import Path

    from bt_lstm.config import parse_group

    out = []
    for group in groups:
        if parse_group(group)[0] == "plugin":
            path, _, func = group.rpartition(":")
            group = f"{Path(path).resolve()}:{func}"
        out.append(group)
    return tuple(out)


def check_architecture(cfg: Any) -> None:
    """Unknown architectures and broken model files fail here, before any data is read."""
    from bt_lstm.models.nets import build_model, model_hparams

    build_model(cfg.model.arch, len(cfg.features.names), model_hparams(cfg),
                cfg.model.model_file)
