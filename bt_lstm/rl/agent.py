"""The DQN agent: SB3 training with validation selection, state_dict + JSON saving, loading.

Legend: T bars, L window length, F features per bar, N observations; a Q table is (N, 3, 3):
bar x current side (short, flat, long) x action (hold, buy, sell).
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from bt_lstm import __version__
from bt_lstm.config import FeatureConfig, StrategyConfig
from bt_lstm.data.files import atomic_write_bytes, atomic_write_json
from bt_lstm.rl.env import StaggeredStart, TradingEnv
from bt_lstm.rl.qnets import QPolicy, batch_q_values, build_q_network, policy_kwargs
from bt_lstm.rl.spec import (
    ACTIONS,
    Q_COLUMNS,
    SIDES,
    DQNConfig,
    flat_observations,
    observation_windows,
)

logger = logging.getLogger(__name__)

WEIGHTS, META = "qnet.pt", "qnet.json"
SCHEMA_VERSION = 1
# fields of the JSON that must equal the request for a saved agent to be reused
IDENTITY = ("qnet", "window", "features", "n_features", "allow_short", "data_fingerprint",
            "training_span", "validation_span", "costs", "hyperparameters")


class AgentError(ValueError):
    """A saved agent is missing, tampered with, or not the one asked for."""


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch on ``n`` threads, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class DQNAgent:
    """A trained Q-network and everything needed to feed it (rebuilt from the JSON)."""

    net: torch.nn.Module
    cfg: DQNConfig
    obs_params: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def windows(self, candles: pd.DataFrame) -> np.ndarray:
        """(T, L, F) observation windows of every bar of ``candles``."""
        return observation_windows(candles, self.cfg, self.obs_params)

    def q_table(self, windows: np.ndarray) -> np.ndarray:
        """(N, L, F) windows -> (N, 3, 3) Q-values for each side (short, flat, long)."""
        n = len(windows)
        obs = np.concatenate([flat_observations(windows, np.full(n, s)) for s in SIDES])
        return batch_q_values(self.net, obs).reshape(3, n, 3).transpose(1, 0, 2)  # (N, 3, 3)

    def q_frame(self, candles: pd.DataFrame, start: int = 0) -> pd.DataFrame:
        """Q-values of bars ``start:`` of ``candles`` as columns ``Q_COLUMNS`` (feed lines);
        bars before ``start`` only feed the windows."""
        table = self.q_table(self.windows(candles)[start:])  # (N, 3, 3)
        return pd.DataFrame(table.reshape(len(table), 9), index=candles.index[start:],
                            columns=list(Q_COLUMNS))

    def act(self, window: np.ndarray, side: int) -> int:
        """The greedy action for one (L, F) window and the current side (the per-bar path)."""
        obs = flat_observations(window[None], np.array([side]))  # (1, L*F+1)
        with torch.no_grad():
            return int(self.net(torch.as_tensor(obs)).argmax(dim=1)[0])


def build_dqn(env: Any, cfg: DQNConfig, n_features: int) -> Any:
    """SB3's ``DQN`` on ``env`` with our Q-network and every hyperparameter from ``cfg`` (the
    one constructor for training and for the speed benchmark). ``cfg.train_freq`` counts env
    steps of all envs together; SB3 counts calls of a vectorised env's ``step``."""
    from stable_baselines3 import DQN

    return DQN(QPolicy, env, learning_rate=cfg.learning_rate, buffer_size=cfg.buffer_size,
               learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, gamma=cfg.gamma,
               train_freq=max(1, cfg.train_freq // getattr(env, "num_envs", 1)),
               gradient_steps=cfg.gradient_steps,
               target_update_interval=cfg.target_update_interval,
               exploration_fraction=cfg.exploration_fraction,
               exploration_final_eps=cfg.exploration_final_eps,
               max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, device="cpu",
               policy_kwargs=policy_kwargs(cfg.qnet, cfg.window, n_features), verbose=0)


def training_env(candles: pd.DataFrame, windows: np.ndarray, span: tuple[int, int],
                 scfg: StrategyConfig, cfg: DQNConfig) -> Any:
    """The training env of ``span``: one ``TradingEnv``, or ``cfg.envs`` of them in SB3's
    ``DummyVecEnv``, env k's first episode starting k/envs of the way into the span."""
    if cfg.envs == 1:
        return TradingEnv(candles, windows, span[0], span[1], scfg, cfg.allow_short)
    from stable_baselines3.common.vec_env import DummyVecEnv

    length = span[1] - 1 - span[0]  # decisions in one episode

    def make(k: int) -> Callable[[], Any]:
        return lambda: StaggeredStart(
            TradingEnv(candles, windows, span[0], span[1], scfg, cfg.allow_short),
            span[0] + k * length // cfg.envs)

    return DummyVecEnv([make(k) for k in range(cfg.envs)])


def greedy_episode(agent: DQNAgent, candles: pd.DataFrame, windows: np.ndarray, start: int,
                   stop: int, cfg: StrategyConfig) -> dict[str, Any]:
    """Run the greedy policy over [start, stop) in the env: total log return, actions, value."""
    table = agent.q_table(windows[start:stop])  # (N, 3, 3)
    env = TradingEnv(candles, windows, start, stop, cfg, agent.cfg.allow_short)
    env.reset()
    total, counts, done = 0.0, [0, 0, 0], False
    while not done:
        action = int(np.argmax(table[env.t - start, env.side + 1]))
        counts[action] += 1
        _, reward, term, trunc, _ = env.step(action)
        total += reward
        done = term or trunc
    return {"log_return": total, "final_value": env.value, "fills": len(env.fills),
            "actions": dict(zip(ACTIONS, counts))}


def train_agent(candles: pd.DataFrame, cfg: DQNConfig, scfg: StrategyConfig,
                train: tuple[int, int], val: tuple[int, int],
                progress: Callable[[int, float], None] | None = None) -> DQNAgent:
    """Train SB3's DQN on the training span; keep the Q-network of the best validation episode.

    Notes
    -----
    The observation normalisation is fitted on training bars only. Every ``eval_every`` steps
    (and at the end) the greedy policy trades the validation span once; the weights with the
    highest validation log return are returned (the SB3 model itself is discarded).
    Randomness: SB3's ``seed`` seeds Python, numpy, torch and the action space; runs reproduce
    on the same machine only.
    """
    from stable_baselines3.common.callbacks import BaseCallback

    from bt_lstm.rl.spec import fit_observation

    params = fit_observation(candles, cfg, train[1])
    windows = observation_windows(candles, cfg, params)
    n_features = windows.shape[2]
    agent = DQNAgent(build_q_network(cfg.qnet, cfg.window, n_features), cfg, params)
    best: dict[str, Any] = {"score": -math.inf, "state": None, "step": 0, "history": []}

    def evaluate(model: Any) -> None:
        agent.net.load_state_dict(model.policy.q_net.state_dict())
        run = greedy_episode(agent, candles, windows, val[0], val[1], scfg)
        step = int(model.num_timesteps)
        best["history"].append({"step": step, **run})
        if run["log_return"] > best["score"]:
            best.update(score=run["log_return"], step=step,
                        state=copy.deepcopy(model.policy.q_net.state_dict()))
        if progress is not None:
            progress(step, run["log_return"])

    class Select(BaseCallback):
        def _on_step(self) -> bool:
            # num_timesteps grows by cfg.envs per call: evaluate when it crosses a multiple
            if (self.num_timesteps // cfg.eval_every
                    > (self.num_timesteps - self.training_env.num_envs) // cfg.eval_every
                    and self.num_timesteps > cfg.learning_starts):
                evaluate(self.model)
            return True

    env = training_env(candles, windows, train, scfg, cfg)
    with torch_threads(cfg.threads):
        model = build_dqn(env, cfg, n_features)
        model.learn(total_timesteps=cfg.timesteps, callback=Select())
        if not best["history"] or best["history"][-1]["step"] != model.num_timesteps:
            evaluate(model)
    agent.net.load_state_dict(best["state"])
    agent.net.eval()
    agent.meta = {"selection": {"metric": "validation log return (greedy episode)",
                                "best_step": best["step"], "best_score": best["score"],
                                "history": best["history"]}}
    return agent


# ---------------------------------------------------------------- saving and loading

def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def agent_identity(cfg: DQNConfig, scfg: StrategyConfig, n_features: int, fingerprint: str,
                   train: tuple[int, int], val: tuple[int, int]) -> dict[str, Any]:
    """The JSON fields a saved agent must match to be reused for this request."""
    hyper = {k: v for k, v in cfg.to_dict().items()
             if k not in ("qnet", "window", "features", "allow_short", "threads")}
    return {"qnet": cfg.qnet, "window": cfg.window, "features": cfg.features,
            "n_features": n_features, "allow_short": cfg.allow_short,
            "data_fingerprint": fingerprint, "training_span": list(train),
            "validation_span": list(val), "hyperparameters": hyper,
            "costs": {k: getattr(scfg, k) for k in ("commission", "slippage",
                                                    "position_fraction", "size_step", "cash")}}


def save_agent(agent: DQNAgent, folder: Path, identity: dict[str, Any],
               extra: dict[str, Any] | None = None) -> None:
    """``qnet.pt`` (state_dict and the JSON's digest) + ``qnet.json`` (everything to rebuild)."""
    import gymnasium
    import stable_baselines3

    meta = {"schema_version": SCHEMA_VERSION, "kind": "dqn_qnet", **identity,
            "config": agent.cfg.to_dict(), "normalisation": agent.obs_params,
            "observation": {"shape": ["window * n_features + 1"], "side": "last element: "
                            "-1 short, 0 flat, 1 long", "window_order": "oldest bar first"},
            "action_map": {"0": "hold: keep the side", "1": "buy: go long",
                           "2": "sell: go short" if agent.cfg.allow_short else "sell: go flat"},
            "versions": {"bt_lstm": __version__, "torch": torch.__version__,
                         "stable_baselines3": stable_baselines3.__version__,
                         "gymnasium": gymnasium.__version__},
            **agent.meta, **(extra or {})}
    buf = io.BytesIO()
    torch.save({"state_dict": agent.net.state_dict(), "meta_sha256": _digest(meta)}, buf)
    data = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS, data)
    atomic_write_json(folder / META, {**meta, "weights_sha256": hashlib.sha256(data).hexdigest()})


def load_agent(folder: Path) -> DQNAgent:
    """Rebuild the Q-network from ``qnet.json`` and load ``qnet.pt`` with ``weights_only``.

    Raises
    ------
    AgentError
        Files missing, weights not matching the JSON's sha256, or the JSON edited after saving.
    """
    folder = Path(folder)
    if not (folder / META).exists() or not (folder / WEIGHTS).exists():
        raise AgentError(f"{folder}: no saved DQN agent ({META} and {WEIGHTS})")
    meta = json.loads((folder / META).read_text())
    data = (folder / WEIGHTS).read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.pop("weights_sha256", None):
        raise AgentError(f"{folder / WEIGHTS}: sha256 differs from {META}: the weights were "
                         f"changed or corrupted; retrain with --retrain")
    saved = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if saved.get("meta_sha256") != _digest(meta):
        raise AgentError(f"{folder / META} was edited after saving (its digest differs from "
                         f"the one stored with the weights); retrain with --retrain")
    cfg = DQNConfig.from_dict(meta["config"])
    net = build_q_network(cfg.qnet, cfg.window, int(meta["n_features"]))
    net.load_state_dict(saved["state_dict"], strict=True)
    return DQNAgent(net.eval(), cfg, meta["normalisation"], meta)


def check_identity(meta: dict[str, Any], identity: dict[str, Any], folder: Path) -> None:
    """Refuse a saved agent whose JSON differs from the request, naming every field."""
    differ = [k for k in IDENTITY if meta.get(k) != identity.get(k)]
    if differ:
        lines = "; ".join(f"{k}: saved {meta.get(k)!r}, asked {identity.get(k)!r}"
                          for k in differ)
        raise AgentError(f"{folder} holds a different DQN agent ({lines}). Use --retrain to "
                         f"replace it, or another --model-dir")


def obtain_agent(candles: pd.DataFrame, cfg: DQNConfig, scfg: StrategyConfig, folder: Path,
                 train: tuple[int, int], val: tuple[int, int], fingerprint: str,
                 retrain: bool = False, progress: Callable[[int, float], None] | None = None
                 ) -> tuple[DQNAgent, bool]:
    """Load or create: reuse the agent in ``folder`` if its JSON matches the request (else
    refuse), train and save one where there is none or ``retrain``. Returns (agent, reused)."""
    folder = Path(folder)
    n_features = 1 if cfg.features == "price" else len(FeatureConfig().names)
    identity = agent_identity(cfg, scfg, n_features, fingerprint, train, val)
    if not retrain and (folder / META).exists():
        agent = load_agent(folder)
        check_identity(agent.meta, identity, folder)
        return agent, True
    agent = train_agent(candles, cfg, scfg, train, val, progress)
    save_agent(agent, folder, identity)
    return load_agent(folder), False

