"""The Q-networks as Stable-Baselines3 feature extractors plus SB3's ``net_arch`` head.

Legend: B batch, L window length, F features per bar; an observation is (B, L*F + 1), the
window flattened row by row (bar by bar) and the current side (-1, 0, 1) last.

LSTM (default): window (B, L, F) -> LSTM 64 (sequences) -> Dropout 0.2 -> LSTM 32 (last state)
-> Dropout 0.2 -> [concat side] -> head Dense 64 ReLU -> Dense 3 (Q of Hold, Buy, Sell).
Dense (baseline): [window flattened, side] -> Dense 128 ReLU -> Dropout 0.2 -> Dense 128 ReLU ->
Dropout 0.2 -> head Dense 64 ReLU -> Dense 3. Neither is stateful: each observation is a fresh
window.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

HEAD = [64]  # net_arch: Dense 64 ReLU, then SB3's final Dense 3
DROPOUT = 0.2


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the keep mask drawn by ``torch.rand``: the same Bernoulli(1 - p) mask
    and 1 / (1 - p) scale, from another random stream.

    Notes
    -----
    torch's CPU Bernoulli kernel behind ``F.dropout`` takes about 1.5 ms for one
    (64, 50, 64) batch, as long as the LSTM's forward pass; a uniform draw compared with p
    takes a quarter of that (measured: docs/guides/dqn.md, Speed).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)`` while
        training; identity in eval mode."""
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))  # 0 or 1/(1-p)
        return x * keep


class QPolicy(DQNPolicy):
    """SB3's ``DQNPolicy`` that skips switching train/eval mode when the mode is already set.

    SB3 calls ``set_training_mode`` before every action and every update; walking the module
    tree each time costs about as much as the Dense network's forward pass.
    """

    def set_training_mode(self, mode: bool) -> None:
        """Switch train / eval mode only when it changes (SB3 calls it on every step)."""
        if self.q_net.training != mode or self.training != mode:
            super().set_training_mode(mode)


class LSTMExtractor(BaseFeaturesExtractor):
    """LSTM 64 (sequences) -> Dropout -> LSTM 32 (last) -> Dropout, with the side appended."""

    def __init__(self, observation_space: gym.spaces.Box, window: int, n_features: int) -> None:
        super().__init__(observation_space, features_dim=32 + 1)
        self.window, self.n_features = window, n_features
        self.lstm1 = nn.LSTM(n_features, 64, batch_first=True)
        self.drop1 = Dropout(DROPOUT)
        self.lstm2 = nn.LSTM(64, 32, batch_first=True)
        self.drop2 = Dropout(DROPOUT)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Features of a batch of observations: (B, L*F+1) -> (B, 32 + 1), the last LSTM state
        and the current side."""
        x = obs[:, :-1].reshape(obs.shape[0], self.window, self.n_features)  # (B, L, F)
        side = obs[:, -1:]  # (B, 1)
        h, _ = self.lstm1(x)  # (B, L, 64)
        _, (last, _) = self.lstm2(self.drop1(h))  # last: (1, B, 32)
        return torch.cat([self.drop2(last[0]), side], dim=1)  # (B, 33)


class DenseExtractor(BaseFeaturesExtractor):
    """Flattened window and side -> Dense 128 -> Dropout -> Dense 128 -> Dropout."""

    def __init__(self, observation_space: gym.spaces.Box, window: int, n_features: int) -> None:
        super().__init__(observation_space, features_dim=128)
        self.net = nn.Sequential(
            nn.Linear(window * n_features + 1, 128), nn.ReLU(), Dropout(DROPOUT),
            nn.Linear(128, 128), nn.ReLU(), Dropout(DROPOUT))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Features of a batch of flattened observations: (B, L*F+1) -> (B, 128)."""
        return self.net(obs)  # (B, L*F+1) -> (B, 128)


EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {"lstm": LSTMExtractor,
                                                      "dense": DenseExtractor}


def observation_space(window: int, n_features: int) -> gym.spaces.Box:
    """The Gymnasium space of one observation: the window's L*F values and the side, float32."""
    return gym.spaces.Box(-np.inf, np.inf, (window * n_features + 1,), np.float32)


def policy_kwargs(qnet: str, window: int, n_features: int) -> dict:
    """SB3 ``policy_kwargs`` for DQN: our extractor and the Dense 64 head."""
    return {"features_extractor_class": EXTRACTORS[qnet],
            "features_extractor_kwargs": {"window": window, "n_features": n_features},
            "net_arch": list(HEAD), "activation_fn": nn.ReLU, "normalize_images": False}


def build_q_network(qnet: str, window: int, n_features: int) -> QNetwork:
    """The Q-network alone (what a DQN policy's ``q_net`` is), in eval mode: no SB3 model,
    no replay buffer; its state_dict keys equal ``DQN.policy.q_net``'s."""
    if qnet not in EXTRACTORS:
        raise ValueError(f"qnet {qnet!r}: use one of {', '.join(EXTRACTORS)}")
    space = observation_space(window, n_features)
    extractor = EXTRACTORS[qnet](space, window, n_features)
    net = QNetwork(space, gym.spaces.Discrete(3), extractor, extractor.features_dim,
                   net_arch=list(HEAD), activation_fn=nn.ReLU, normalize_images=False)
    return net.eval()


def batch_q_values(net: nn.Module, obs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(N, L*F+1) observations -> (N, 3) Q-values, in eval mode (dropout off)."""
    net.eval()
    out = np.empty((len(obs), 3), dtype=np.float32)
    with torch.no_grad():
        for i in range(0, len(obs), chunk):
            out[i:i + chunk] = net(torch.as_tensor(obs[i:i + chunk])).numpy()
    return out
