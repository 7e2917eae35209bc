"""Model bundles on disk (state_dict + JSON, never pickles) and their compatibility checks."""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bt_lstm import __version__
from bt_lstm.data.files import atomic_write_bytes, atomic_write_json, sha256_file
from bt_lstm.models.nets import build_model

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class ArtifactError(ValueError):
    """A saved model or bundle that cannot be used; the message says why."""


def save_model(model: nn.Module, folder: Path, name: str, meta: dict[str, Any]) -> None:
    """Save ``<name>.pt`` (state_dict) and ``<name>.json`` (everything to rebuild and check it).

    ``meta`` must hold ``arch``, ``hparams`` and ``n_features``; the checksum, schema and
    library versions are added here.
    """
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    data = buf.getvalue()
    atomic_write_bytes(folder / f"{name}.pt", data)
    full = dict(meta, schema_version=SCHEMA_VERSION, library_version=__version__,
                weights_file=f"{name}.pt", weights_sha256=hashlib.sha256(data).hexdigest())
    atomic_write_json(folder / f"{name}.json", full)


def read_model_meta(folder: Path, name: str) -> dict[str, Any]:
    """``<name>.json`` of a bundle, checked for the fields and schema every model needs.

    Raises
    ------
    ArtifactError
        Missing or unreadable file, missing fields, or another schema version.
    """
    meta_path = Path(folder) / f"{name}.json"
    if not meta_path.is_file():
        raise ArtifactError(f"{meta_path}: missing; train the models again")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta_path}: not valid JSON ({exc})") from None
    missing = [k for k in ("schema_version", "arch", "hparams", "n_features", "weights_sha256")
               if k not in meta]
    if missing:
        raise ArtifactError(f"{meta_path}: missing fields {', '.join(missing)}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise ArtifactError(f"{meta_path}: schema_version {meta['schema_version']} is not "
                            f"{SCHEMA_VERSION}; train the models again")
    return meta


def load_model(folder: Path, name: str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from ``<name>.json`` and load ``<name>.pt`` into it (weights only).

    Raises
    ------
    ArtifactError
        Missing files, unknown schema, checksum mismatch or weights that do not fit.
    """
    meta_path, pt_path = folder / f"{name}.json", folder / f"{name}.pt"
    meta = read_model_meta(folder, name)
    if not pt_path.is_file():
        raise ArtifactError(f"{pt_path}: missing; train the models again")
    if sha256_file(pt_path) != meta["weights_sha256"]:
        raise ArtifactError(f"{pt_path}: checksum does not match {meta_path.name}; the file is "
                            f"corrupt or was changed; train the models again")
    model_file = meta.get("model_file")
    if model_file is not None:
        _check_model_file(meta_path, meta)
    try:
        model = build_model(meta["arch"], int(meta["n_features"]), dict(meta["hparams"]),
                            model_file)
    except ValueError as exc:
        raise ArtifactError(f"{meta_path}: cannot rebuild {meta['arch']}: {exc}") from None
    try:
        state = torch.load(pt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        raise ArtifactError(f"{pt_path}: cannot be loaded as weights for {meta['arch']} "
                            f"({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, meta


def _check_model_file(meta_path: Path, meta: dict[str, Any]) -> None:
    """A user's architecture file must be where it was, unchanged since training."""
    path = Path(meta["model_file"])
    if not path.is_file():
        raise ArtifactError(f"{meta_path}: architecture {meta['arch']!r} comes from {path}, "
                            f"which is missing; put the file back there or retrain")
    if sha256_file(path) != meta.get("model_file_sha256"):
        raise ArtifactError(f"{meta_path}: {path} changed since the model was trained (sha256 "
                            f"differs), so the saved weights may not fit it; restore the file or "
                            f"train the models again")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The bundle manifest, or None when the folder holds no complete bundle."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
