"""The hyperparameter search space of `tune`: the documented default, a user's JSON file in its
place (validated), and a trial's parameters applied to a config. Pure: no Optuna here."""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Mapping

from bt_lstm.config import PipelineConfig, replace

# search-space name -> (config section, field); the names are the runners' flag names
PARAMS: dict[str, tuple[str, str]] = {
    "lr": ("train", "lr"),
    "batch_size": ("train", "batch_size"),
    "weight_decay": ("train", "weight_decay"),
    "hidden_size": ("model", "hidden_size"),
    "layers": ("model", "num_layers"),
    "dropout": ("model", "dropout"),
    "lookback": ("windows", "lookback"),
}
INT_PARAMS = ("batch_size", "hidden_size", "layers", "lookback")
TYPES = ("float", "int", "categorical")

# Small on purpose: six dimensions, ranges around the defaults that train in seconds on a CPU.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    "hidden_size": {"type": "categorical", "choices": [16, 32, 64]},
    "layers": {"type": "int", "low": 1, "high": 2, "log": False},
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "log": False},
    "lookback": {"type": "categorical", "choices": [16, 32, 64]},
    "batch_size": {"type": "categorical", "choices": [128, 256, 512]},
}


def load_space(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """The default space, or the one in the JSON file ``path`` (validated).

    Raises
    ------
    ValueError
        The file is missing or not JSON, or a parameter is unknown or badly specified; the
        message starts with ``--space FILE:`` and says how to fix it.
    """
    if path is None:
        return {k: dict(v) for k, v in DEFAULT_SPACE.items()}
    where = f"--space {path}"
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    return check_space(data, where)


def check_space(data: Any, where: str = "space") -> dict[str, dict[str, Any]]:
    """Validate a space mapping {name: spec}; return a normalised copy."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{where}: expected a non-empty JSON object {{name: spec}}, e.g. "
                         f'{{"lr": {{"type": "float", "low": 0.0003, "high": 0.01, "log": true}}}}')
    out = {}
    for name, spec in data.items():
        if name not in PARAMS:
            close = difflib.get_close_matches(str(name), PARAMS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(PARAMS)}"
            raise ValueError(f"{where}: unknown parameter {name!r}; {hint}")
        out[name] = _check_spec(name, spec, f"{where}: {name}")
    _check_bounds(out, where)
    return out


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_spec(name: str, spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping) or spec.get("type") not in TYPES:
        raise ValueError(f"{where}: expected an object with \"type\" one of {', '.join(TYPES)}")
    kind = spec["type"]
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log",
                                                                 "step"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown key {extra[0]!r} for type {kind} "
                         f"(allowed: {', '.join(sorted(allowed))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or not all(map(_is_num, choices)):
            raise ValueError(f"{where}: \"choices\" must be a non-empty list of numbers")
        if name in INT_PARAMS and not all(isinstance(c, int) for c in choices):
            raise ValueError(f"{where}: choices must be integers")
        return {"type": kind, "choices": list(choices)}
    low, high = spec.get("low"), spec.get("high")
    if not (_is_num(low) and _is_num(high)) or low >= high:
        raise ValueError(f"{where}: needs numbers \"low\" < \"high\" (got {low!r}, {high!r})")
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise ValueError(f"{where}: type int needs integer low and high")
    if kind == "float" and name in INT_PARAMS:
        raise ValueError(f"{where}: {name} is an integer; use type int or categorical")
    log = spec.get("log", False)
    if not isinstance(log, bool) or (log and low <= 0):
        raise ValueError(f"{where}: \"log\" must be true or false, and true needs low > 0")
    out = {"type": kind, "low": low, "high": high, "log": log}
    if "step" in spec:
        if not _is_num(spec["step"]) or spec["step"] <= 0 or log:
            raise ValueError(f"{where}: \"step\" must be a positive number (and not with log)")
        out["step"] = spec["step"]
    return out


def _check_bounds(space: dict[str, dict[str, Any]], where: str) -> None:
    """Every extreme value of every parameter must make a valid config."""
    for name, spec in space.items():
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in values:
            try:
                apply_params(PipelineConfig(), {name: value})
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{where}: {name}={value!r} is not a valid setting ({exc})"
                                 ) from None


def apply_params(cfg: PipelineConfig, params: Mapping[str, Any]) -> PipelineConfig:
    """``cfg`` with a trial's parameters (search-space names) written into their sections."""
    changes: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        section, field = PARAMS[name]
        changes.setdefault(section, {})[field] = int(value) if name in INT_PARAMS else value
    for section, fields in changes.items():
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **fields)})
    return cfg
