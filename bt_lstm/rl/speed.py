"""DQN timings for ``bench``: training env steps/s, single-observation latency, batch Q rate."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.config import StrategyConfig
from bt_lstm.rl.agent import DQNAgent, build_dqn, torch_threads, training_env
from bt_lstm.rl.qnets import build_q_network
from bt_lstm.rl.spec import DQNConfig, fit_observation, observation_windows


def _training_rate(frame: pd.DataFrame, cfg: DQNConfig, windows: np.ndarray, steps: int
                   ) -> tuple[float, float]:
    """Env steps per second of ``DQN.learn`` (updates included) over ``steps`` steps after the
    random warm-up, inside a run of ``cfg.timesteps`` as ``train_agent`` starts it (the same
    exploration schedule): (per wall second, per CPU second of this process)."""
    from stable_baselines3.common.callbacks import BaseCallback

    env = training_env(frame, windows, (cfg.window - 1, len(frame)), StrategyConfig(), cfg)
    model = build_dqn(env, cfg, windows.shape[2])
    clock: dict[str, float] = {}

    class Timer(BaseCallback):
        def _on_step(self) -> bool:
            if "wall" not in clock and self.num_timesteps >= cfg.learning_starts:
                clock.update(wall=time.perf_counter(), cpu=time.process_time(),
                             start=self.num_timesteps)
            if "wall" in clock and self.num_timesteps - clock["start"] >= steps:
                clock.update(wall=time.perf_counter() - clock["wall"],
                             cpu=time.process_time() - clock["cpu"],
                             steps=self.num_timesteps - clock["start"])
                return False  # the timed steps are done: stop the run here
            return True

    model.learn(total_timesteps=max(cfg.timesteps, cfg.learning_starts + steps + cfg.envs),
                callback=Timer())
    return clock["steps"] / clock["wall"], clock["steps"] / clock["cpu"]


def bench_dqn(frame: pd.DataFrame, steps: int = 2000, reps: int = 200, train_reps: int = 3,
              cfg: DQNConfig | None = None) -> dict[str, Any]:
    """Per Q-network (lstm, dense), with ``cfg`` (default: ``DQNConfig()``, the settings
    ``bt-lstm dqn`` trains with: 4 envs, batch 64 every 16 steps, 1,000 random steps, window
    50, one thread): training env steps/s (median of ``train_reps`` runs, per wall second and
    per CPU second: on shared cores the second is the figure an idle core would give), greedy
    action latency of one observation (median, p99 over ``reps`` calls) and batch Q-value
    throughput (observations/s). The load average before and after is recorded beside them."""
    base = DQNConfig() if cfg is None else cfg
    window, threads = base.window, base.threads
    out: dict[str, Any] = {"window": window, "threads": threads, "train_steps": steps,
                           "train_reps": train_reps, "load_average_before": os.getloadavg()[0],
                           "settings": {k: getattr(base, k) for k in (
                               "batch_size", "train_freq", "gradient_steps", "buffer_size",
                               "envs", "learning_starts", "timesteps")}}
    for qnet in ("lstm", "dense"):
        cfg = replace(base, qnet=qnet)
        windows = observation_windows(frame, cfg, fit_observation(frame, cfg, len(frame)))
        with torch_threads(threads):
            rates = np.array([_training_rate(frame, cfg, windows, steps)
                              for _ in range(train_reps)])  # (reps, 2): wall, cpu
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
        out[qnet] = {"train_env_steps_per_s": float(np.median(rates[:, 0])),
                     "train_env_steps_per_cpu_s": float(np.median(rates[:, 1])),
                     "train_env_steps_per_s_runs": [float(r) for r in rates[:, 0]],
                     "act_latency_ms_median": float(np.median(lat_ms)),
                     "act_latency_ms_p99": float(np.percentile(lat_ms, 99)),
                     "batch_q_obs_per_s": q_rate}
    out["load_average_after"] = os.getloadavg()[0]
    return out
