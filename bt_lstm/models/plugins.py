"""Users' feature plugins (``--features path/to/file.py:function``): loading, the sha256 that
bundles record, and the look-ahead check every plugin passes before any training.

A plugin is ``function(candles: pd.DataFrame) -> pd.DataFrame`` with numeric columns on the
candles' index (docs/guides/features.md). It is loaded as users' architectures are
(``models.nets.load_model_file``): imported once per process under a name made of its file's
hash, so two versions of a file never mix. ``signals.groups`` calls the loaded function; this
module is where user code is imported, because ``signals`` stays pure.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.config import FeatureConfig, parse_group
from bt_lstm.data.files import sha256_file
from bt_lstm.signals.groups import DEFAULT_GROUPS, Plugin, call_plugin, compute_groups

_MODULES: dict[str, Any] = {}  # sha256 of a plugin file -> its module
CHECK_CUTS = 5  # cut points of the look-ahead check
RTOL, ATOL = 1e-9, 1e-12  # a causal plugin gives the same numbers; leaks move them far more


class PluginError(ValueError):
    """A plugin that cannot be used: missing, failing, leaking or malformed (one line)."""


def split_spec(spec: str) -> tuple[Path, str]:
    """``path/file.py:function`` -> (path, function name)."""
    path, _, func = spec.rpartition(":")
    return Path(path), func


def load_plugin(spec: str) -> tuple[Plugin, str]:
    """The plugin's function and its file's sha256.

    Raises
    ------
    PluginError
        No such file, an import error, or no such function in it.
    """
    path, func = split_spec(spec)
    if not path.is_file():
        raise PluginError(f"feature plugin {spec}: no such file {path}")
    sha = sha256_file(path)
    module = _MODULES.get(sha)
    if module is None:
        name = f"bt_lstm_user_features_{sha[:16]}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise PluginError(f"feature plugin {spec}: {path} is not a Python file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise PluginError(f"feature plugin {spec}: {path} failed to import: "
                              f"{type(exc).__name__}: {first}") from exc
        _MODULES[sha] = module
    fn = getattr(module, func, None)
    if not callable(fn):
        raise PluginError(f"feature plugin {spec}: {path} has no function {func!r}")
    return fn, sha


def plugin_specs(cfg: FeatureConfig) -> list[str]:
    """The plugin groups of ``cfg``, in order."""
    return [g for g in cfg.groups if parse_group(g)[0] == "plugin"]


def plugin_functions(cfg: FeatureConfig) -> dict[str, Plugin]:
    """Group spec -> loaded function, for every plugin group of ``cfg``."""
    return {spec: load_plugin(spec)[0] for spec in plugin_specs(cfg)}


def plugin_meta(cfg: FeatureConfig) -> dict[str, Any]:
    """``{"feature_plugins": {spec: sha256}}`` for the manifest and the cache key; {} without
    plugins (bundles and keys of other configs stay as they were)."""
    specs = plugin_specs(cfg)
    if not specs:
        return {}
    return {"feature_plugins": {spec: load_plugin(spec)[1] for spec in specs}}


def check_plugin_files(recorded: dict[str, str], where: str) -> None:
    """Refuse a bundle whose plugin files are gone or changed since it was trained.

    Raises
    ------
    PluginError
        A recorded plugin file is missing or its sha256 differs (names both hashes).
    """
    for spec, sha in recorded.items():
        path, _ = split_spec(spec)
        if not path.is_file():
            raise PluginError(f"{where}: feature plugin file {path} is gone; restore it or "
                              f"train the models again")
        now = sha256_file(path)
        if now != sha:
            raise PluginError(f"{where}: feature plugin file {path} changed since the models "
                              f"were trained (sha256 {now[:12]}... is not the recorded "
                              f"{sha[:12]}...); restore it or train the models again")


def feature_frame(frame: pd.DataFrame, cfg: FeatureConfig) -> pd.DataFrame:
    """``signals.groups.compute_groups`` with the config's plugins loaded."""
    if tuple(cfg.groups) == DEFAULT_GROUPS:
        return compute_groups(frame, cfg)
    return compute_groups(frame, cfg, plugin_functions(cfg))


def check_plugin(spec: str, frame: pd.DataFrame, n_cuts: int = CHECK_CUTS) -> list[str]:
    """Check one plugin on ``frame`` before any training; return its column names.

    Its output must be a numeric frame on the candles' index with no all-NaN column, and its
    values at bar t must not change when the bars after t are removed, at ``n_cuts`` cut
    points spread over the data.

    Raises
    ------
    PluginError
        One line: the problem, and for a leak the column and the first bar that changed.
    """
    fn, _ = load_plugin(spec)
    try:
        full = call_plugin(fn, frame, spec)
    except ValueError as exc:
        raise PluginError(str(exc)) from None
    for col in full.columns:
        if full[col].isna().all():
            raise PluginError(f"feature plugin {spec}: column {col!r} is NaN on every bar")
    n = len(frame)
    cuts = sorted(set(np.linspace(max(1, n // 5), n - 2, n_cuts).round().astype(int)))
    for t in cuts:
        cut = call_plugin(fn, frame.iloc[:t + 1], spec)
        a, b = full.iloc[:t + 1].to_numpy(), cut.reindex(columns=full.columns).to_numpy()
        same = (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= ATOL + RTOL * np.abs(a))
        if not same.all():
            first_row = int(np.flatnonzero(~same.all(axis=1))[0])
            col = int(np.flatnonzero(~same[first_row])[0])
            raise PluginError(
                f"feature plugin {spec} looks ahead: column {full.columns[col]!r} at bar "
                f"{frame.index[first_row]} changed when the bars after {frame.index[t]} were "
                f"removed ({a[first_row, col]!r} with them, {b[first_row, col]!r} without); "
                f"use only rows up to each bar (no shift(-k), centred or backward-filled "
                f"windows)")
    return [str(c) for c in full.columns]


def check_feature_inputs(frame: pd.DataFrame, cfg: FeatureConfig) -> None:
    """Before any training: every plugin passes ``check_plugin`` and every group finds its
    inputs in ``frame`` (ValueError, one line, otherwise)."""
    if tuple(cfg.groups) == DEFAULT_GROUPS:
        return
    for spec in plugin_specs(cfg):
        check_plugin(spec, frame)
    feature_frame(frame, cfg)
