"""The Gymnasium trading environment: one bar a step, fills at the next open, reward after costs.

Legend: T bars, L window length, F features per bar.
"""
from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from bt_lstm.config import StrategyConfig
from bt_lstm.rl.spec import target_side
from bt_lstm.trading.account import Account
from bt_lstm.trading.values import Candle


class TradingEnv(gym.Env):
    """Trade one instrument over the bars [start, stop) of ``candles``.

    A step is a decision at the close of bar t (the observation: the window ending at t and
    the current side). The order fills at the open of t+1 with commission and slippage, exactly
    as ``TradableBarBroker`` fills it: the trading kernel's ``Account`` books it (an order waits
    past placeholder bars; an order the broker would refuse for cash is refused). The reward is
    log(V[t+1] / V[t]), V the portfolio value at a close after costs. The episode is truncated
    (not terminated) at the span's last bar: no reward or observation uses a bar after the one
    that closes the step.

    Parameters
    ----------
    candles
        OHLCV (not modified); bars before ``start`` only feed the first windows.
    windows
        (T, L, F) observation windows of every bar of ``candles`` (``observation_windows``).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, candles: pd.DataFrame, windows: np.ndarray, start: int, stop: int,
                 cfg: StrategyConfig, allow_short: bool = False) -> None:
        super().__init__()
        if not 0 <= start < stop - 1 <= len(candles) - 1:
            raise ValueError(f"span [{start}, {stop}) of {len(candles)} bars: need at least two "
                             f"bars inside the data")
        self.open, self.high, self.low, self.close, self.volume = (
            candles[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume"))
        self.windows = windows.reshape(len(windows), -1)  # (T, L*F)
        self.start, self.stop, self.cfg, self.allow_short = start, stop, cfg, allow_short
        n_obs = self.windows.shape[1] + 1
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n_obs,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.reset()

    @property
    def pos(self) -> float:
        """The position, in units of the asset."""
        return self.account.position

    @property
    def cash(self) -> float:
        """The cash."""
        return self.account.cash

    @property
    def side(self) -> int:
        """The position's side: -1 short, 0 flat, 1 long (the observation's last element)."""
        return self.account.side

    @property
    def value(self) -> float:
        """Portfolio value at the current bar's close."""
        a = self.account
        return a.cash + a.position * self.close[self.t]

    def _obs(self) -> np.ndarray:
        out = np.empty(self.windows.shape[1] + 1, dtype=np.float32)
        out[:-1] = self.windows[self.t]
        out[-1] = self.side
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        """Start an episode at the span's first bar, flat, with the starting cash; return the
        first observation."""
        super().reset(seed=seed)
        self.t, self.account = self.start, Account(self.cfg)
        self.fills: list[tuple[int, float, float, float]] = []  # bar, size, price, commission
        return self._obs(), {}

    def _decide(self, action: int) -> None:
        """At the close of t: the order (if any) that fills at the next tradable open."""
        want = target_side(int(action), self.side, self.allow_short)
        if want != self.side:
            self.account.decide(want, self.close[self.t])

    def _fill(self) -> None:
        t = self.t
        if not self.account.pending:
            return
        before = self.account.position
        fill = self.account.fill(Candle(t, self.open[t], self.high[t], self.low[t],
                                        self.close[t], self.volume[t]))
        if fill is not None and self.account.position != before:
            done = self.account.position - before
            self.fills.append((t, done, fill.price, abs(done) * fill.price * self.cfg.commission))

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Take ``action`` at the close of the current bar; the order fills at the next bar's
        open.

        Returns ``(observation, reward, terminated, truncated, info)``; the reward is the
        bar's log change of portfolio value after commission and slippage. The episode ends at
        the span's last bar as truncation; it terminates only on ruin (a value of 0 or less,
        possible only short)."""
        value = self.value
        self._decide(action)
        self.t += 1
        self._fill()
        new_value = self.value
        terminated = new_value <= 0.0  # ruined (only possible short): nothing left to trade
        reward = math.log(max(new_value, 1e-12) / value)
        truncated = not terminated and self.t >= self.stop - 1
        return self._obs(), reward, terminated, truncated, {"value": new_value}


class StaggeredStart(gym.Wrapper):
    """A ``TradingEnv`` whose first episode starts at bar ``first`` (inside its span); every
    later episode starts at the span's start as usual. Several of them, staggered over the span,
    make the parallel training envs see different bars at the same moment."""

    def __init__(self, env: TradingEnv, first: int) -> None:
        super().__init__(env)
        if not env.start <= first < env.stop - 1:
            raise ValueError(f"first start {first} outside the span [{env.start}, {env.stop - 1})")
        self.first: int | None = first

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict]:
        """The first reset starts at bar ``first``; later ones at the span's start."""
        obs, info = self.env.reset(seed=seed, options=options)
        if self.first is not None:
            base = self.env.unwrapped
            base.t, self.first = self.first, None
            obs = base._obs()
        return obs, info
