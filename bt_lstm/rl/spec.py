"""The one trading specification shared by the Gymnasium env and the Backtrader strategy.

Observation builder, action map and order sizing. The env fills through the trading kernel's
``Account``; strategies/dqn_strategy.py runs the same observation builder and sizing and lets
Backtrader's broker fill (tests/test_rl.py proves both give the same fills and equity).

Legend: T bars, L window length (bars), F features per bar, N observations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.config import FeatureConfig, _fail, _in_range, _positive_int, _Serialisable

# the same sizing rule as the strategies and the live engine (one code path)
from bt_lstm.trading.rules import order_size  # noqa: F401 (re-exported)

HOLD, BUY, SELL = 0, 1, 2
ACTIONS = ("hold", "buy", "sell")
QNETS = ("lstm", "dense")
FEATURE_SETS = ("price", "pipeline")
SIDES = (-1, 0, 1)  # the position part of an observation: short, flat, long
# A Q table (N, 3 sides, 3 actions) as columns: q<3 * (side + 1) + action>
Q_COLUMNS = tuple(f"q{i}" for i in range(9))


@dataclass(frozen=True)
class DQNConfig(_Serialisable):
    """The Q-network, its observation and the SB3 DQN hyperparameters.

    SB3's defaults are Atari's (a 1e6 buffer, target update every 10,000 steps, exploration
    over 10 % of 10 million steps). A training span here holds a few thousand bars, one bar an
    env step, so: the buffer holds every transition of a run (``buffer_size`` >= timesteps);
    learning starts after 1,000 random steps (a few hundred bars of each action); the target
    network follows every 500 steps (several updates per pass over the span, not one in years);
    exploration decays over the first 30 % of the run to 5 %; gamma 0.95 (a horizon of ~20 bars:
    the reward is already the bar's log change of value, distant bars matter little). One
    update of batch 64 every 16 steps (a replay ratio of 4 samples per env step, against SB3's
    16): an LSTM update costs ~15 ms on one core. ``envs`` (4) training envs step together,
    each starting its first episode at another quarter of the training span (later episodes
    start at the span's start): SB3 then picks their actions with one batched forward pass
    instead of four, the other half of what reaches 500 env steps/s (the measurements:
    docs/guides/dqn.md, Speed). Step counts (timesteps, learning_starts, train_freq, target update,
    eval_every) count env steps of all envs together.
    """

    qnet: str = "lstm"  # lstm | dense (the feed-forward baseline)
    window: int = 50  # bars in each observation window
    features: str = "price"  # price: normalised closes | pipeline: our scaled feature window
    allow_short: bool = False  # Sell goes short instead of flat
    timesteps: int = 20_000  # env steps of training (each a bar; updates every train_freq)
    learning_rate: float = 5e-4
    buffer_size: int = 50_000
    learning_starts: int = 1_000
    batch_size: int = 64
    gamma: float = 0.95
    train_freq: int = 16  # env steps between updates (SB3's 4 is 4x slower: guides/dqn.md)
    gradient_steps: int = 1  # updates each train_freq steps: 64 / 16 = 4 samples per env step
    envs: int = 4  # training envs stepped together, staggered over the span (one batched act)
    target_update_interval: int = 500
    exploration_fraction: float = 0.3
    exploration_final_eps: float = 0.05
    max_grad_norm: float = 10.0  # SB3's gradient clipping
    eval_every: int = 2_000  # steps between validation episodes (model selection)
    seed: int = 7
    threads: int = 1  # torch threads while training (2 shared cores: 1 is fastest here)

    def __post_init__(self) -> None:
        """Validate every field; a bad value raises ``ConfigError`` naming the field, the value
        and what is allowed."""
        if self.qnet not in QNETS:
            _fail(type(self), "qnet", self.qnet, f"one of {QNETS}")
        if self.features not in FEATURE_SETS:
            _fail(type(self), "features", self.features, f"one of {FEATURE_SETS}")
        if not isinstance(self.allow_short, bool):
            _fail(type(self), "allow_short", self.allow_short, "true or false")
        _positive_int(self, "window", "timesteps", "buffer_size", "batch_size", "train_freq",
                      "gradient_steps", "target_update_interval", "eval_every", "threads",
                      "envs")
        if self.train_freq % self.envs:
            _fail(type(self), "train_freq", self.train_freq,
                  f"a multiple of envs ({self.envs}): env steps between updates, all envs together")
        if self.window < 2:
            _fail(type(self), "window", self.window, "at least 2")
        if not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            _fail(type(self), "learning_starts", self.learning_starts, "an integer >= 0")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            _fail(type(self), "seed", self.seed, "an integer >= 0")
        _in_range(self, "learning_rate", 0.0, 1.0, lo_open=True)
        _in_range(self, "gamma", 0.0, 1.0)
        _in_range(self, "exploration_fraction", 0.0, 1.0)
        _in_range(self, "exploration_final_eps", 0.0, 1.0)
        _in_range(self, "max_grad_norm", 0.0, 1e6, lo_open=True)


# ---------------------------------------------------------------- observation builder

def price_windows(close: np.ndarray, window: int) -> np.ndarray:
    """Causally normalised close windows: (T,) -> (T, L, 1) float32; rows t < L-1 are 0.

    Notes
    -----
    Row t holds log(close[t-L+1 .. t] / close[t]) divided by the standard deviation of the
    window's own one-bar log returns: everything comes from the L bars ending at t (no bar
    after t, no statistic of the whole sample). The last element is always 0.
    """
    logc = np.log(np.asarray(close, dtype=float))
    out = np.zeros((len(logc), window, 1), dtype=np.float32)
    if len(logc) < window:
        return out
    win = np.lib.stride_tricks.sliding_window_view(logc, window)  # (T-L+1, L)
    rel = win - win[:, -1:]  # (T-L+1, L)
    sd = np.diff(win, axis=1).std(axis=1, keepdims=True)  # (T-L+1, 1)
    out[window - 1:, :, 0] = rel / np.where(sd > 1e-12, sd, 1.0)
    return out


def fit_observation(candles: pd.DataFrame, cfg: DQNConfig, train_stop: int) -> dict[str, Any]:
    """Normalisation parameters fitted on bars [0, train_stop) only (JSON-ready)."""
    if cfg.features == "price":
        return {"kind": "price", "method": "log(close/close_t) / std(1-bar log returns), "
                                           "both inside the window"}
    from bt_lstm.signals.features import compute_features
    from bt_lstm.signals.windows import fit_scaler

    fcfg = FeatureConfig()
    feats = compute_features(candles, fcfg).to_numpy(dtype=float)  # (T, F)
    scaler = fit_scaler(feats[:train_stop], np.zeros(train_stop))
    return {"kind": "pipeline", "features": list(fcfg.names), "feature_config": fcfg.to_dict(),
            "mean": list(scaler.mean), "scale": list(scaler.scale)}


def observation_windows(candles: pd.DataFrame, cfg: DQNConfig, params: dict[str, Any]
                        ) -> np.ndarray:
    """Every bar's observation window: (T, L, F) float32, row t from bars <= t only."""
    if cfg.features == "price":
        return price_windows(candles["close"].to_numpy(dtype=float), cfg.window)
    from bt_lstm.signals.features import compute_features

    fcfg = FeatureConfig.from_dict(params["feature_config"])
    feats = compute_features(candles, fcfg).to_numpy(dtype=float)  # (T, F)
    scaled = (feats - np.asarray(params["mean"])) / np.asarray(params["scale"])
    scaled = np.nan_to_num(scaled, nan=0.0).astype(np.float32)  # warm-up rows read as 0
    out = np.zeros((len(scaled), cfg.window, scaled.shape[1]), dtype=np.float32)
    if len(scaled) >= cfg.window:
        view = np.lib.stride_tricks.sliding_window_view(scaled, cfg.window, axis=0)
        out[cfg.window - 1:] = view.transpose(0, 2, 1)  # (T-L+1, F, L) -> (T-L+1, L, F)
    return out


def first_decision_bar(cfg: DQNConfig) -> int:
    """The first bar whose window is complete (and, for pipeline features, warmed up)."""
    warm = 0
    if cfg.features == "pipeline":
        from bt_lstm.signals.features import warmup_bars

        warm = warmup_bars(FeatureConfig())
    return cfg.window - 1 + warm


def flat_observations(windows: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """(N, L, F) windows and (N,) sides -> (N, L*F + 1) float32: the position is last."""
    n = len(windows)
    return np.concatenate([windows.reshape(n, -1),  # (N, L*F)
                           np.asarray(sides, dtype=np.float32).reshape(n, 1)], axis=1)


# ---------------------------------------------------------------- actions, orders, fills

def target_side(action: int, have: int, allow_short: bool) -> int:
    """Hold keeps the side, Buy goes long, Sell goes flat (short with ``allow_short``)."""
    if action == HOLD:
        return have
    if action == BUY:
        return 1
    if action == SELL:
        return -1 if allow_short else 0
    raise ValueError(f"action {action!r}: use 0 (hold), 1 (buy) or 2 (sell)")
