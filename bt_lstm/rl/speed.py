"""DQN timings for ``bench``: training env steps/s, single-observation latency, batch Q rate."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.config import StrategyConfig
from bt_lstm.rl.agent import DQNAgent, torch_threads
from bt_lstm.rl.env import TradingEnv
from bt_lstm.rl.qnets import build_q_network, policy_kwargs
from bt_lstm.rl.spec import DQNConfig, fit_observation, observation_windows


def _training_rate(frame: pd.DataFrame, cfg: DQNConfig, windows: np.ndarray, steps: int
                   ) -> float:
    """Env steps per second of ``DQN.learn`` after the random warm-up (updates included)."""
    from stable_baselines3 import DQN

    env = TradingEnv(frame, windows, cfg.window - 1, len(frame), StrategyConfig(), False)
    model = DQN("MlpPolicy", env, learning_rate=cfg.learning_rate, buffer_size=cfg.buffer_size,
                learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, gamma=cfg.gamma,
                train_freq=cfg.train_freq, target_update_interval=cfg.target_update_interval,
                exploration_fraction=cfg.exploration_fraction, seed=cfg.seed, device="cpu",
                policy_kwargs=policy_kwargs(cfg.qnet, cfg.window, windows.shape[2]))
    model.learn(total_timesteps=cfg.learning_starts + 1)  # the random phase: no updates
    start = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def bench_dqn(frame: pd.DataFrame, window: int = 50, steps: int = 2000, reps: int = 200,
              threads: int = 1) -> dict[str, Any]:
    """Per Q-network (lstm, dense): training env steps/s (``DQNConfig`` defaults, updates every
    ``train_freq`` steps, batch ``batch_size``), greedy action latency of one observation
    (median, p99 over ``reps`` calls) and batch Q-value throughput (observations/s)."""
    out: dict[str, Any] = {"window": window, "threads": threads, "train_steps": steps}
    for qnet in ("lstm", "dense"):
        cfg = DQNConfig(qnet=qnet, window=window, learning_starts=200)
        windows = observation_windows(frame, cfg, fit_observation(frame, cfg, len(frame)))
        with torch_threads(threads):
            rate = _training_rate(frame, cfg, windows, steps)
            agent = DQNAgent(build_q_network(qnet, window, windows.shape[2]), cfg,
                             {"kind": "price"})
            lat = []
            for i in range(reps + 10):
                t0 = time.perf_counter()
                agent.act(windows[window + i % 100], 0)
                lat.append(time.perf_counter() - t0)
            lat_ms = np.array(lat[10:]) * 1e3
            batch = windows[window - 1:]
            t0 = time.perf_counter()
            agent.q_table(batch)  # 3 observations (one per side) per bar
            q_rate = 3 * len(batch) / (time.perf_counter() - t0)
        out[qnet] = {"train_env_steps_per_s": rate,
                     "act_latency_ms_median": float(np.median(lat_ms)),
                     "act_latency_ms_p99": float(np.percentile(lat_ms, 99)),
                     "batch_q_obs_per_s": q_rate}
    return out
