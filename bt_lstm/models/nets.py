"""nn.Module architectures, the registry that builds them, and users' own architecture files.

Legend: B batch, L lookback, F features, H hidden size. Every model maps (B, L, F) -> (B,).
"""
from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from bt_lstm.config import PipelineConfig
from bt_lstm.data.files import sha256_file

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding an architecture to the registry under ``name``.

    The class is built as ``cls(n_features=F, lookback=L, hidden_size=H, num_layers=K,
    dropout=p)`` and its ``forward`` maps (B, L, F) to (B,).

    Examples
    --------
    In a file of your own (``my_models/attn_lstm.py``), selected with
    ``--model-file my_models/attn_lstm.py --model AttnLSTM``::

        from bt_lstm.models import register_model

        @register_model("AttnLSTM")
        class AttnLSTM(nn.Module):
            def __init__(self, n_features, lookback, hidden_size=32, num_layers=1, dropout=0.0):
                ...
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


_LOADED_FILES: dict[str, str] = {}  # sha256 of a user's architecture file -> module name


def load_model_file(path: str | Path) -> str:
    """Import a user's architecture file (which registers itself); return its sha256.

    The module is named after the file's hash, so the same file is imported once per process
    and two versions of it never mix.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {path}: no such file")
    sha = sha256_file(path)
    if sha in _LOADED_FILES:
        return sha
    name = f"bt_lstm_user_models_{sha[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"model file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ValueError(f"model file {path} failed to import: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    _LOADED_FILES[sha] = name
    return sha


def model_hparams(cfg: PipelineConfig) -> dict[str, Any]:
    """The keyword arguments every registered architecture is built with (beside n_features)."""
    return {"lookback": cfg.windows.lookback, "hidden_size": cfg.model.hidden_size,
            "num_layers": cfg.model.num_layers, "dropout": cfg.model.dropout}


def build_model(arch: str, n_features: int, hparams: dict[str, Any],
                model_file: str | Path | None = None) -> nn.Module:
    """Build a registered architecture (from ``model_file`` when given) from its hyperparameters."""
    if model_file is not None:
        load_model_file(model_file)
    cls = _REGISTRY.get(arch)
    if cls is None:
        close = difflib.get_close_matches(arch, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        where = f" in {model_file} or" if model_file else ""
        raise ValueError(f"unknown architecture {arch!r}{where} among the registered ones "
                         f"({', '.join(registered_models())}){hint}")
    return cls(n_features=n_features, **hparams)


@register_model("lstm")
class LSTMRegressor(nn.Module):
    """LSTM over the window; a linear head on the last time step's hidden state."""

    def __init__(self, n_features: int, lookback: int | None = None, hidden_size: int = 32,
                 num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()  # lookback: any window length works
        self.lstm = nn.LSTM(n_features, hidden_size, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (B, L, H)
        return self.head(out[:, -1, :])[:, 0]  # (B, H) -> (B, 1) -> (B,)


@register_model("gru")
class GRURegressor(nn.Module):
    """GRU over the window; a linear head on the last time step's hidden state."""

    def __init__(self, n_features: int, lookback: int | None = None, hidden_size: int = 32,
                 num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()  # lookback: any window length works
        self.gru = nn.GRU(n_features, hidden_size, num_layers=num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)  # (B, L, H)
        return self.head(out[:, -1, :])[:, 0]  # (B,)


@register_model("mlp")
class MLPRegressor(nn.Module):
    """The flattened window through ``num_layers`` ReLU layers of ``hidden_size`` units."""

    def __init__(self, n_features: int, lookback: int, hidden_size: int = 32,
                 num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features * lookback
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))[:, 0]  # (B, L, F) -> (B, L*F) -> (B, 1) -> (B,)


@register_model("stacked_lstm")
class StackedLSTMRegressor(nn.Module):
    """The stacked LSTM of the DQN design: LSTM 2H (sequences) -> dropout -> LSTM H -> dropout
    -> Dense 2H ReLU -> output. With ``--hidden-size 32 --dropout 0.2`` it is exactly
    LSTM 64 -> 0.2 -> LSTM 32 -> 0.2 -> Dense 64. Its depth is fixed: ``num_layers`` must be 1
    or 2 (both mean this two-LSTM stack)."""

    def __init__(self, n_features: int, lookback: int | None = None, hidden_size: int = 32,
                 num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if num_layers not in (1, 2):
            raise ValueError(f"stacked_lstm has a fixed two-LSTM stack; num_layers={num_layers} "
                             f"does not apply (use 1 or 2)")
        self.lstm1 = nn.LSTM(n_features, 2 * hidden_size, batch_first=True)
        self.lstm2 = nn.LSTM(2 * hidden_size, hidden_size, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, 2 * hidden_size)
        self.out = nn.Linear(2 * hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm1(x)  # (B, L, 2H)
        seq, _ = self.lstm2(self.drop(seq))  # (B, L, H)
        last = self.drop(seq[:, -1, :])  # (B, H)
        return self.out(torch.relu(self.dense(last)))[:, 0]  # (B, 2H) -> (B, 1) -> (B,)
