"""The one run manifest every job writes: what produced a run folder (data, seeds, code,
machine)."""
from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from bt_lstm import __version__
from bt_lstm.data.files import atomic_write_json, clean_json

MANIFEST = "manifest.json"
PACKAGES = ("torch", "backtrader", "pandas", "numpy", "scipy", "arch", "scikit-learn", "quantstats",
            "joblib",
            "distributed", "stable_baselines3", "gymnasium")


def package_versions() -> dict[str, str | None]:
    """Installed version of each package a run's numbers depend on (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The checkout's commit, or None outside a git checkout."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Code and machine: library and package versions, git commit, Python and platform."""
    return {"library_version": __version__, "packages": package_versions(),
            "git_commit": git_commit(), "python": platform.python_version(),
            "platform": platform.platform()}


def write_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """Write ``folder/manifest.json``: the job's own ``fields`` plus the creation time and
    :func:`provenance`. Returns what was written."""
    manifest = clean_json({"created": datetime.now(timezone.utc).isoformat(), **fields,
                           **provenance()})
    atomic_write_json(Path(folder) / MANIFEST, manifest)
    return manifest
