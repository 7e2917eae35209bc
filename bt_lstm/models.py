"""nn.Module architectures and the registry that builds them from their config.

Legend: B batch, L lookback, F features, H hidden size. Every model maps (B, L, F) -> (B,).
"""
from __future__ import annotations

import difflib
from typing import Any, Callable

import torch
from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding an architecture to the registry under ``name``.

    The class is built as ``cls(n_features=F, hidden_size=H, num_layers=K, dropout=p)`` and its
    ``forward`` maps (B, L, F) to (B,).
    """
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"architecture name {name!r} is already registered by "
                             f"{existing.__module__}.{existing.__qualname__}")
        _REGISTRY[name] = cls
        return cls
    return deco


def registered_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(arch: str, n_features: int, hparams: dict[str, Any]) -> nn.Module:
    """Build a registered architecture from its name and hyperparameters."""
    cls = _REGISTRY.get(arch)
    if cls is None:
        close = difflib.get_close_matches(arch, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown architecture {arch!r}{hint} (registered: "
                         f"{', '.join(registered_models())})")
    return cls(n_features=n_features, **hparams)


@register_model("lstm")
class LSTMRegressor(nn.Module):
    """LSTM over the window; a linear head on the last time step's hidden state."""

    def __init__(self, n_features: int, hidden_size: int = 32, num_layers: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden_size, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (B, L, H)
        return self.head(out[:, -1, :])[:, 0]  # (B, H) -> (B, 1) -> (B,)


@register_model("gru")
class GRURegressor(nn.Module):
    """GRU over the window; a linear head on the last time step's hidden state."""

    def __init__(self, n_features: int, hidden_size: int = 32, num_layers: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.gru = nn.GRU(n_features, hidden_size, num_layers=num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)  # (B, L, H)
        return self.head(out[:, -1, :])[:, 0]  # (B,)
