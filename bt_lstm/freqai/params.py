"""``freqai.model_training_parameters`` of ``BtLstmRegressor``, parsed once into frozen values.

Unknown keys are refused with the closest known name; every nested block is one of our own
config dataclasses (``ModelConfig``, ``TrainConfig``, ``RegimeConfig``) and validates itself.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bt_lstm.config import (
    DEFAULT_SKILL_P,
    NO_SKILL_POLICIES,
    ModelConfig,
    RegimeConfig,
    TrainConfig,
)

KNOWN_KEYS = ("lookback", "model", "train", "regimes", "no_skill", "skill_p", "gap_bars")


@dataclass(frozen=True)
class LstmParams:
    """What ``BtLstmRegressor`` trains: architecture, training, regimes and the skill guard."""

    lookback: int = 32  # candles in each input window
    model: ModelConfig = field(default_factory=ModelConfig)  # arch, hidden_size, model_file...
    train: TrainConfig = field(default_factory=TrainConfig)  # epochs, lr, seed, min windows...
    regimes: RegimeConfig | None = None  # None: one pooled network; else one per regime too
    no_skill: str = "flat"  # a network without validated skill: flat | pooled | trade
    skill_p: float = DEFAULT_SKILL_P  # Diebold-Mariano p needed to call it skill
    gap_bars: int = 1  # training windows end this many candles before validation (>= horizon)

    def __post_init__(self) -> None:
        """Refuse a non-positive lookback and a negative gap, naming the
        ``model_training_parameters`` key."""
        if not isinstance(self.lookback, int) or self.lookback < 1:
            raise ValueError(f"model_training_parameters.lookback={self.lookback!r}: use a "
                             f"positive number of candles")
        if not isinstance(self.gap_bars, int) or self.gap_bars < 0:
            raise ValueError(f"model_training_parameters.gap_bars={self.gap_bars!r}: use 0 or "
                             f"more candles (at least the label's horizon)")
        if self.no_skill not in NO_SKILL_POLICIES:
            raise ValueError(f"model_training_parameters.no_skill={self.no_skill!r}: use one "
                             f"of {', '.join(NO_SKILL_POLICIES)}")
        if not 0.0 < float(self.skill_p) <= 1.0:
            raise ValueError(f"model_training_parameters.skill_p={self.skill_p!r}: use a "
                             f"p-value in (0, 1]")

    def context_bars(self) -> int:
        """Candles a frame needs for its last row to get a forecast: a full window and, with
        regimes, the ``trend_bars`` returns its regime label is computed from."""
        regime = self.regimes.trend_bars + 1 if self.regimes is not None else 0
        return max(self.lookback, regime)

    def hparams(self) -> dict[str, Any]:
        """The keyword arguments a registered architecture is built with (beside n_features)."""
        return {"lookback": self.lookback, "hidden_size": self.model.hidden_size,
                "num_layers": self.model.num_layers, "dropout": self.model.dropout}


def parse_params(raw: Mapping[str, Any] | None, base_dir: Path | None = None) -> LstmParams:
    """``model_training_parameters`` -> ``LstmParams``; ``model.model_file`` relative to
    ``base_dir`` (freqtrade's user_data folder) becomes absolute, and the architecture must
    be registered (after importing that file).

    Raises
    ------
    ValueError
        An unknown key (with the closest known one), a bad value, a missing model file or an
        unknown architecture; the message is one line naming the key.
    """
    raw = dict(raw or {})
    for key in raw:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(KNOWN_KEYS)}"
            raise ValueError(f"unknown model_training_parameters key {key!r}{hint}")
    model = _block(ModelConfig, "model", raw.pop("model", {}))
    if model.model_file is not None:
        path = Path(model.model_file).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        model = ModelConfig.from_dict(dict(model.to_dict(), model_file=str(path.resolve())))
    train = _block(TrainConfig, "train", raw.pop("train", {}))
    regimes = raw.pop("regimes", None)
    params = LstmParams(model=model, train=train,
                        regimes=_block(RegimeConfig, "regimes", regimes) if regimes else None,
                        **raw)
    check_architecture(params)
    return params


def _block(cls: type, key: str, value: Any) -> Any:
    """One nested block through its dataclass; errors prefixed with the key path."""
    try:
        return cls.from_dict(value or {})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model_training_parameters.{key}: {exc}") from None


def check_architecture(params: LstmParams) -> None:
    """The architecture exists (importing the user's file first) and builds with these
    hyperparameters; a ValueError says which of them is wrong."""
    from bt_lstm.models.nets import build_model

    try:
        build_model(params.model.arch, 1, params.hparams(), params.model.model_file)
    except ValueError as exc:
        raise ValueError(f"model_training_parameters.model: {exc}") from None
    except TypeError as exc:
        raise ValueError(f"model_training_parameters.model: architecture "
                         f"{params.model.arch!r} cannot be built with {params.hparams()} "
                         f"({exc})") from None
