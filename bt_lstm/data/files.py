"""Files every layer writes: atomic writes (temp file, fsync, rename), staged folders, the tidying
of a killed writer's leftovers, file hashes and JSON without NaN. Standard library (numpy only
inside clean_json)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "BT_LSTM_DATA_DIR"  # default folder of <SYMBOL>_<timeframe>.csv files


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


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A staging folder beside ``final``: moved into place whole when the block ends, removed
    (and ``final`` left as it was) when the block raises."""
    staged = staging_dir(final)
    try:
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    replace_dir(staged, final)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def clean_json(obj: Any) -> Any:
    """JSON has no NaN: write null instead."""
    import numpy as np  # here, not at the top: the downloader imports this module, never numpy

    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
