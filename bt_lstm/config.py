"""Frozen configuration dataclasses for every stage of the pipeline, with JSON round trip."""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

FEATURE_NAMES = (
    "log_ret",
    "volatility",
    "rsi",
    "ema_dist",
    "macd_hist",
    "atr_pct",
    "volume_z",
)
# Feature groups (features.groups): the named ones, plus "htf:TF" (the price features on a
# higher timeframe), "cross:SYMBOL" (another market's price features) and "FILE.py:FUNCTION"
# (a user's plugin). "price" computes `names`.
FEATURE_GROUPS = ("price", "calendar", "flow")
GROUP_FORMS = "price, calendar, flow, htf:TF (e.g. htf:1d), cross:SYMBOL, FILE.py:FUNCTION"
TARGETS = ("logret", "vol-scaled")
REGIME_METHODS = ("rule", "gmm", "column")
ORIGINS = ("run", "declared", "tuning")
DEVICES = ("auto", "cpu", "cuda")
NO_SKILL_POLICIES = ("flat", "pooled", "trade")
# The networks a config can tune apart: one per regime (signals.regimes.REGIME_LABELS, in label
# order) and the pooled fallback. The bundle names them regime_0..2 and pooled.
MODEL_KEYS = ("bearish", "sideways", "bullish", "pooled")
# One-sided Diebold-Mariano p-value a model must reach on its validation windows to trade.
DEFAULT_SKILL_P = 0.05


class ConfigError(ValueError):
    """A config value outside what its field allows. Carries the field, so a command line can
    name the flag (or the config file key) the value came from instead of the field."""

    def __init__(self, owner: str, name: str, value: Any, allowed: str) -> None:
        super().__init__(f"{owner}.{name}={value!r} is invalid: expected {allowed}")
        self.owner, self.name, self.value, self.allowed = owner, name, value, allowed


def _fail(cls: type, name: str, value: Any, allowed: str) -> None:
    raise ConfigError(cls.__name__, name, value, allowed)


def _positive_int(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            _fail(type(obj), name, value, "an integer >= 1")


def _in_range(obj: Any, name: str, lo: float, hi: float, lo_open: bool = False,
              hi_open: bool = False) -> None:
    value = getattr(obj, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        _fail(type(obj), name, value, f"a number in {left}{lo}, {hi}{right}")


# Spellings checked here without the data (config imports nothing of ours): the timeframe as
# trading.timeframe spells it, a market id, a plugin's file and function. Whether htf's bar is
# longer than the data's, or the file exists, is checked where those are known.
_TF_SPELLING = re.compile(r"^\d+(?:\.\d+)?(?:s|m|min|h|d|w)$", re.IGNORECASE)
_SYMBOL_SPELLING = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PLUGIN_SPELLING = re.compile(r"^(.+\.py):([A-Za-z_][A-Za-z0-9_]*)$")


def parse_group(group: str) -> tuple[str, str]:
    """One feature group -> (kind, argument): ("price", ""), ("htf", "1d"), ("cross",
    "ETHUSDT"), ("plugin", "path/file.py:function").

    Raises
    ------
    ValueError
        The group is none of the forms in ``GROUP_FORMS``; the message says which forms are.

    Examples
    --------
    >>> parse_group("htf:1d"), parse_group("cross:ETHUSDT"), parse_group("calendar")
    (('htf', '1d'), ('cross', 'ETHUSDT'), ('calendar', ''))
    """
    text = group if isinstance(group, str) else repr(group)
    if text in FEATURE_GROUPS:
        return text, ""
    if _PLUGIN_SPELLING.match(text):
        return "plugin", text
    kind, _, arg = text.partition(":")
    if kind == "htf" and _TF_SPELLING.match(arg):
        return "htf", arg
    if kind == "cross" and _SYMBOL_SPELLING.match(arg):
        return "cross", arg
    close = difflib.get_close_matches(text, FEATURE_GROUPS + FEATURE_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"feature group {text!r} is unknown{hint}; groups: {GROUP_FORMS}")


def split_feature_spec(text: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """``--features`` text -> (price feature names or None, groups), in the order given.

    Each comma-separated entry is a group (``GROUP_FORMS``) or one of the price features
    (``FEATURE_NAMES``): names choose which price features the ``price`` group computes (and
    ``htf``/``cross`` repeat), and put ``price`` among the groups where the first name stands.

    Raises
    ------
    ValueError
        An unknown entry, a repeat, or nothing at all.

    Examples
    --------
    >>> split_feature_spec("price,calendar,htf:1d")
    (None, ('price', 'calendar', 'htf:1d'))
    >>> split_feature_spec("rsi,log_ret,calendar")
    (('rsi', 'log_ret'), ('price', 'calendar'))
    """
    entries = [e.strip() for e in str(text).split(",") if e.strip()]
    if not entries:
        raise ValueError("no feature group given")
    names: list[str] = []
    groups: list[str] = []
    for entry in entries:
        if entry in names or entry in groups:
            raise ValueError(f"{entry!r} is given twice")
        if entry in FEATURE_NAMES:
            names.append(entry)
            entry = "price"
            if entry in groups:
                continue
        parse_group(entry)
        groups.append(entry)
    return (tuple(names) if names else None), tuple(groups)


class _Serialisable:
    """Mixin: ``to_dict`` / ``from_dict`` with unknown-key rejection and suggestions."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Serialisable):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [v.to_dict() if isinstance(v, _Serialisable) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict expects a mapping, got "
                            f"{type(data).__name__}")
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = [k for k in data if k not in known]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise ValueError(f"unknown {cls.__name__} key {key!r}{hint}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            sub = _NESTED.get((cls.__name__, key))
            many = _NESTED_MANY.get((cls.__name__, key))
            if sub is not None:
                value = sub.from_dict(value)
            elif many is not None:
                if not isinstance(value, list):
                    raise TypeError(f"{cls.__name__}.{key} expects a list, got "
                                    f"{type(value).__name__}")
                value = tuple(many.from_dict(v) for v in value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Any:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class FeatureConfig(_Serialisable):
    """Which causal features to compute and their periods (in bars)."""

    names: tuple[str, ...] = FEATURE_NAMES  # the price group's features, in this order
    # groups whose columns, concatenated in this order, form the model input (GROUP_FORMS)
    groups: tuple[str, ...] = ("price",)
    vol_bars: int = 20  # rolling window of the volatility feature
    rsi_bars: int = 14  # Wilder RSI period
    ema_bars: int = 50  # EMA whose distance from close is a feature
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    atr_bars: int = 14
    volume_bars: int = 50  # window of the volume z-score

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        if not isinstance(self.names, tuple) or not self.names:
            _fail(type(self), "names", self.names, f"a non-empty tuple drawn from {FEATURE_NAMES}")
        for name in self.names:
            if name not in FEATURE_NAMES:
                close = difflib.get_close_matches(str(name), FEATURE_NAMES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                _fail(type(self), "names", name, f"one of {FEATURE_NAMES}{hint}")
        if len(set(self.names)) != len(self.names):
            _fail(type(self), "names", self.names, "names without repeats")
        if not isinstance(self.groups, tuple) or not self.groups:
            _fail(type(self), "groups", self.groups, f"a non-empty list of groups: {GROUP_FORMS}")
        for group in self.groups:
            try:
                parse_group(group)
            except ValueError as exc:
                _fail(type(self), "groups", group, str(exc).split("; ", 1)[-1]
                      .replace("groups: ", "one of "))
        if len(set(self.groups)) != len(self.groups):
            _fail(type(self), "groups", self.groups, "groups without repeats")
        _positive_int(self, "vol_bars", "rsi_bars", "ema_bars", "macd_fast", "macd_slow",
                      "macd_signal", "atr_bars", "volume_bars")
        if self.macd_fast >= self.macd_slow:
            _fail(type(self), "macd_fast", self.macd_fast, f"less than macd_slow={self.macd_slow}")


@dataclass(frozen=True)
class RegimeConfig(_Serialisable):
    """How the market regime (0 bearish, 1 sideways, 2 bullish) is classified at each bar."""

    method: str = "rule"  # rule | gmm | column (use the data's own `regime` column)
    trend_bars: int = 45  # trailing window of the trend and volatility inputs
    # rule: training quantile of trailing volatility below which = sideways
    vol_quantile: float = 0.4
    gmm_restarts: int = 5  # gmm: n_init of the GaussianMixture

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        if self.method not in REGIME_METHODS:
            _fail(type(self), "method", self.method, f"one of {REGIME_METHODS}")
        _positive_int(self, "trend_bars", "gmm_restarts")
        if self.trend_bars < 2:
            _fail(type(self), "trend_bars", self.trend_bars, "an integer >= 2")
        _in_range(self, "vol_quantile", 0.0, 1.0, lo_open=True, hi_open=True)


@dataclass(frozen=True)
class WindowConfig(_Serialisable):
    """Windowing and the chronological train / validation / test split."""

    lookback: int = 32  # bars in each model input window
    horizon: int = 1  # the target is the log return over the next `horizon` bars
    train_frac: float = 0.70
    val_frac: float = 0.15  # the test part is what remains (default 0.15)
    gap_bars: int = 1  # purge gap between parts; at least `horizon`
    # logret: the log return over the horizon; vol-scaled: that return divided by the trailing
    # volatility known at t (signals.windows.make_target), in the target's own units
    target: str = "logret"

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        _positive_int(self, "lookback", "horizon", "gap_bars")
        if self.target not in TARGETS:
            close = difflib.get_close_matches(str(self.target), TARGETS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(type(self), "target", self.target, f"one of {TARGETS}{hint}")
        _in_range(self, "train_frac", 0.0, 1.0, lo_open=True, hi_open=True)
        _in_range(self, "val_frac", 0.0, 1.0, lo_open=True, hi_open=True)
        if self.train_frac + self.val_frac >= 1.0:
            _fail(type(self), "val_frac", self.val_frac,
                  f"a value leaving a test part: train_frac + val_frac < 1 "
                  f"(train_frac={self.train_frac})")
        if self.gap_bars < self.horizon:
            _fail(type(self), "gap_bars", self.gap_bars, f"at least horizon={self.horizon}")

    @property
    def test_frac(self) -> float:
        """The test part's share: what the training and validation shares leave."""
        return 1.0 - self.train_frac - self.val_frac


@dataclass(frozen=True)
class ModelConfig(_Serialisable):
    """Architecture name (from the registry) and its hyperparameters."""

    arch: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    dropout: float = 0.0  # between stacked layers; ignored with one layer
    model_file: str | None = None  # a user's Python file that registers `arch` (absolute path)

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        if not isinstance(self.arch, str) or not self.arch:
            _fail(type(self), "arch", self.arch, "a registered architecture name")
        _positive_int(self, "hidden_size", "num_layers")
        _in_range(self, "dropout", 0.0, 1.0, hi_open=True)


@dataclass(frozen=True)
class TrainConfig(_Serialisable):
    """Optimiser, early stopping, seeding and device."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 5  # epochs without validation improvement before stopping
    clip_norm: float = 1.0  # gradient-norm clipping
    seed: int = 7
    device: str = "auto"  # auto | cpu | cuda
    min_regime_windows: int = 200  # fewer training windows -> the regime uses the pooled model
    min_val_windows: int = 20  # fewer validation windows -> the regime uses the pooled model
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        _positive_int(self, "epochs", "batch_size", "patience", "min_regime_windows",
                      "min_val_windows")
        _in_range(self, "lr", 0.0, 1.0, lo_open=True)
        _in_range(self, "weight_decay", 0.0, 1.0)
        _in_range(self, "clip_norm", 0.0, 1e6, lo_open=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            _fail(type(self), "seed", self.seed, "an integer >= 0")
        if self.device not in DEVICES:
            _fail(type(self), "device", self.device, f"one of {DEVICES}")
        if not isinstance(self.threads, int) or self.threads < 0:
            _fail(type(self), "threads", self.threads, "an integer >= 0")


@dataclass(frozen=True)
class StrategyConfig(_Serialisable):
    """Trading rule, sizing and costs of the backtest."""

    threshold: float = 0.001  # |forecast| (log return) needed to hold a position
    long_only: bool = False
    position_fraction: float = 0.95  # fraction of equity per position; headroom for gaps and fees
    commission: float = 0.001  # fraction of traded notional (0.1 %)
    slippage: float = 0.0005  # fraction of price, against the trader
    cash: float = 10_000.0
    size_step: float = 1e-6  # order sizes are rounded down to this step (exchange lot size)
    # a regime whose model has no validated skill: flat (forecast 0) | pooled (the pooled
    # model if it has skill, else flat) | trade (trade it anyway, for research)
    no_skill: str = "flat"
    skill_p: float = DEFAULT_SKILL_P  # skill: validation MSE below zero's with DM p <= this

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        _in_range(self, "threshold", 0.0, 1.0)
        if not isinstance(self.long_only, bool):
            _fail(type(self), "long_only", self.long_only, "true or false")
        _in_range(self, "position_fraction", 0.0, 1.0, lo_open=True)
        _in_range(self, "commission", 0.0, 0.1)
        _in_range(self, "slippage", 0.0, 0.1)
        _in_range(self, "cash", 0.0, 1e15, lo_open=True)
        _in_range(self, "size_step", 0.0, 1e6, lo_open=True)
        if self.no_skill not in NO_SKILL_POLICIES:
            _fail(type(self), "no_skill", self.no_skill, f"one of {NO_SKILL_POLICIES}")
        _in_range(self, "skill_p", 0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class ProvenanceConfig(_Serialisable):
    """Where this config came from: how many configurations were tried to find it (the N of the
    deflated Sharpe ratio) and how much their Sharpes varied. Not part of the model-cache key."""

    origin: str = "run"  # run (flags / defaults) | declared (--trials-tried) | tuning (a study)
    n_trials: int = 1  # configurations tried before settling on this one
    # variance of the trials' annualised (validation) Sharpes; None: unknown, reports use the
    # sampling variance of a zero Sharpe over the test days
    trials_sharpe_var: float | None = None
    study: str | None = None  # tuning: the study that proposed this config (name or path)

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        if self.origin not in ORIGINS:
            _fail(type(self), "origin", self.origin, f"one of {ORIGINS}")
        _positive_int(self, "n_trials")
        if self.trials_sharpe_var is not None:
            _in_range(self, "trials_sharpe_var", 0.0, 1e6)
        if self.study is not None and not isinstance(self.study, str):
            _fail(type(self), "study", self.study, "a string or null")


@dataclass(frozen=True)
class ModelOverride(_Serialisable):
    """One network's own settings (a regime's, or the pooled fallback's); fields left None
    keep the ``model`` / ``train`` sections' values. The lookback stays shared (one window
    length for the whole bundle)."""

    model: str = "pooled"  # bearish | sideways | bullish | pooled
    hidden_size: int | None = None
    num_layers: int | None = None
    dropout: float | None = None
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        if self.model not in MODEL_KEYS:
            close = difflib.get_close_matches(str(self.model), MODEL_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(type(self), "model", self.model, f"one of {MODEL_KEYS}{hint}")

    def changes(self, section: str) -> dict[str, Any]:
        """The fields set here that belong to ``section`` ("model" or "train")."""
        names = (("hidden_size", "num_layers", "dropout") if section == "model"
                 else ("lr", "batch_size", "weight_decay"))
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def model_key(name: str) -> str:
    """A bundle model name (regime_0.., pooled) or a key (bearish.., pooled) -> the key."""
    if name.startswith("regime_") and name[7:].isdigit() and int(name[7:]) < 3:
        return MODEL_KEYS[int(name[7:])]
    return name


@dataclass(frozen=True)
class PipelineConfig(_Serialisable):
    """Everything one backtest run depends on."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    regimes: RegimeConfig = field(default_factory=RegimeConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)
    # per-network settings (tuning per regime); empty: every network uses model / train
    overrides: tuple[ModelOverride, ...] = ()

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        if not isinstance(self.overrides, tuple) or not all(
                isinstance(o, ModelOverride) for o in self.overrides):
            _fail(type(self), "overrides", self.overrides, "a list of ModelOverride objects")
        keys = [o.model for o in self.overrides]
        if len(set(keys)) != len(keys):
            _fail(type(self), "overrides", keys, "at most one override per model")
        for key in keys:  # each network's resolved settings must be valid
            self.for_model(key)

    def for_model(self, name: str) -> PipelineConfig:
        """The config one network is built and trained with: ``model`` and ``train`` with
        that network's override applied (``name``: regime_0.., pooled, or bearish..)."""
        key = model_key(name)
        mine = [o for o in self.overrides if o.model == key]
        if not mine:
            return self if not self.overrides else dataclasses.replace(self, overrides=())
        o = mine[0]
        return dataclasses.replace(
            self, overrides=(), model=dataclasses.replace(self.model, **o.changes("model")),
            train=dataclasses.replace(self.train, **o.changes("train")))

    def training_dict(self) -> dict[str, Any]:
        """The parts that decide the trained models (the model-cache key).

        Neither the strategy section nor the provenance section does, except that the
        ``pooled`` no-skill policy adds a pooled network to every bundle.
        """
        out = {k: v for k, v in self.to_dict().items() if k not in ("strategy", "provenance")}
        if not self.overrides:  # configs from before per-network settings keep their key
            out.pop("overrides")
        # configs from before feature groups and targets keep their key (and their models)
        if self.features.groups == ("price",):
            out["features"] = {k: v for k, v in out["features"].items() if k != "groups"}
        if self.windows.target == "logret":
            out["windows"] = {k: v for k, v in out["windows"].items() if k != "target"}
        if self.strategy.no_skill == "pooled":
            out["pooled_model"] = True
        return out


_NESTED: dict[tuple[str, str], type] = {
    ("PipelineConfig", "features"): FeatureConfig,
    ("PipelineConfig", "regimes"): RegimeConfig,
    ("PipelineConfig", "windows"): WindowConfig,
    ("PipelineConfig", "model"): ModelConfig,
    ("PipelineConfig", "train"): TrainConfig,
    ("PipelineConfig", "strategy"): StrategyConfig,
    ("PipelineConfig", "provenance"): ProvenanceConfig,
}

_NESTED_MANY: dict[tuple[str, str], type] = {("PipelineConfig", "overrides"): ModelOverride}


def replace(cfg: Any, **changes: Any) -> Any:
    """`dataclasses.replace` re-exported so callers need one import."""
    return dataclasses.replace(cfg, **changes)
