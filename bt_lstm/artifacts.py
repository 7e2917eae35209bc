"""Model bundles on disk (state_dict + JSON, never pickles), compatibility checks, atomic writes."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bt_lstm import __version__
from bt_lstm.models import build_model

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class ArtifactError(ValueError):
    """A saved model or bundle that cannot be used; the message says why."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Temp, staging and set-aside names carry the writing process's id, so a later process can
# tell the leftovers of a killed writer (removed, or restored) from a live writer's files.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?:[^.]+\.tmp|[^.]+\.partial|old)$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(folder: str | os.PathLike) -> list[str]:
    """Tidy what killed writers left in ``folder``; return what was done, one line each.

    A set-aside previous folder (``.NAME.PID.old``) whose replacement never arrived is moved
    back to NAME; other leftovers of dead processes (temp files, staging folders, set-aside
    folders already replaced) are removed. A live process's files are left alone.
    """
    folder = Path(folder)
    done: list[str] = []
    if not folder.is_dir():
        return done
    for entry in sorted(folder.iterdir()):
        m = _LEFTOVER.match(entry.name)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        final = folder / m.group("name")
        if entry.name.endswith(".old") and not final.exists():
            os.replace(entry, final)
            done.append(f"restored {final} (a replacement was interrupted)")
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed stale {entry}")
        else:
            entry.unlink(missing_ok=True)
            done.append(f"removed stale {entry}")
    for line in done:
        logger.warning(line)
    return done


def temp_beside(path: Path, suffix: str = ".tmp") -> str:
    """A new empty temp file beside ``path`` (same filesystem), named for clean_stale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    return tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside ``path``, fsync, then rename over it: never a torn file."""
    path = Path(path)
    tmp = temp_beside(path)
    fd = os.open(tmp, os.O_WRONLY)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def replace_dir(staged: Path, final: Path) -> None:
    """Move a fully written folder into place; the previous one is removed only afterwards."""
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{os.getpid()}.old")
        os.replace(final, old)
    os.replace(staged, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_dir(final: Path) -> Path:
    """A fresh temp folder beside ``final`` (same filesystem, so the final rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    staged = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".partial",
                                   dir=final.parent))
    os.chmod(staged, 0o777 & ~_umask())
    return staged


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(model: nn.Module, folder: Path, name: str, meta: dict[str, Any]) -> None:
    """Save ``<name>.pt`` (state_dict) and ``<name>.json`` (everything to rebuild and check it).

    ``meta`` must hold ``arch``, ``hparams`` and ``n_features``; the checksum, schema and
    library versions are added here.
    """
    import io

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
        raise ArtifactError(f"{meta_path}: missing; retrain with --retrain")
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
                            f"{SCHEMA_VERSION}; retrain with --retrain")
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
        raise ArtifactError(f"{pt_path}: missing; retrain with --retrain")
    if sha256_file(pt_path) != meta["weights_sha256"]:
        raise ArtifactError(f"{pt_path}: checksum does not match {meta_path.name}; the file is "
                            f"corrupt or was changed; retrain with --retrain")
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
    from bt_lstm.models import file_sha256

    path = Path(meta["model_file"])
    if not path.is_file():
        raise ArtifactError(f"{meta_path}: architecture {meta['arch']!r} comes from {path}, "
                            f"which is missing; put the file back there or retrain")
    if file_sha256(path) != meta.get("model_file_sha256"):
        raise ArtifactError(f"{meta_path}: {path} changed since the model was trained (sha256 "
                            f"differs), so the saved weights may not fit it; restore the file or "
                            f"retrain with --retrain")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The bundle manifest, or None when the folder holds no complete bundle."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
