"""Run folders: ``reports/<job>_<DATASET>_<tf>/<stamp>/``, the group's ``latest`` link, and
``reports/index.html``, the list of every run."""
from __future__ import annotations

import html
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bt_lstm.data.files import atomic_write_text

logger = logging.getLogger(__name__)

STAMP = "%Y%m%d-%H%M%S"
LATEST = "latest"
INDEX = "index.html"
PAGES = ("tearsheet.html", "index.html")  # the page a run's row links to, first found
STITCHED = "stitched"  # where a portfolio walk-forward writes its out-of-sample report


def new_run_dir(group: Path) -> Path:
    """A folder name not yet taken under ``group``: the UTC time, ``-2``, ``-3``... when two
    runs start in the same second. Nothing is created: jobs write a staged folder and move it
    there whole."""
    group = Path(group)
    stamp = datetime.now(timezone.utc).strftime(STAMP)
    run_dir, n = group / stamp, 2
    while run_dir.exists():
        run_dir, n = group / f"{stamp}-{n}", n + 1
    return run_dir


def claim_run_dir(run_dir: Path, force: bool) -> None:
    """Create a new run's folder; an existing one is refused, or moved aside with ``force``.

    Raises
    ------
    ValueError
        ``run_dir`` exists and ``force`` is off (runs are never overwritten).
    """
    if run_dir.exists() and not force:
        raise ValueError(f"{run_dir} already exists; runs are never overwritten: pass another "
                         f"--run-id, --resume {run_dir.name} to finish it, or --force to move "
                         f"it aside and start again")
    if run_dir.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
        run_dir.rename(aside)  # moved, never deleted: the user decides what to keep
        logger.warning("--force: the existing run was moved to %s", aside)
    run_dir.mkdir(parents=True)


def mark_latest(run_dir: Path) -> None:
    """Point ``<group>/latest`` at ``run_dir``: a relative symlink swapped in atomically, or,
    where the filesystem has no symlinks, a file holding the folder's name."""
    run_dir = Path(run_dir)
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}.link.tmp"  # clean_stale's leftover name
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(run_dir.name, tmp)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write_text(link, run_dir.name + "\n")


def resolve_run(folder: Path) -> Path:
    """``folder`` itself when it is a run; a group folder's newest run (its ``latest``);
    ``folder`` unchanged when it has no ``latest``."""
    folder = Path(folder)
    link = folder / LATEST
    if link.is_symlink() or link.is_dir():
        return folder / os.readlink(link) if link.is_symlink() else link
    if link.is_file():
        return folder / link.read_text().strip()
    return folder


def run_id(run_dir: Path, root: Path) -> str:
    """The run's path under the reports folder (what ``--resume`` and the index name it by)."""
    try:
        return Path(run_dir).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(run_dir).name


def written_files(run_dir: Path) -> list[Path]:
    """Every file of a finished run folder, in name order (subfolders included)."""
    return sorted(p for p in Path(run_dir).rglob("*") if p.is_file())


def describe_files(run_dir: Path, root: Path) -> list[str]:
    """Terminal lines for what a run wrote: each file at the top of the folder, one line per
    subfolder (``folds/: 40 files``), then the reports index."""
    run_dir = Path(run_dir)
    lines = [str(p) for p in sorted(run_dir.iterdir()) if p.is_file()]
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        lines.append(f"{sub}/: {sum(1 for p in sub.rglob('*') if p.is_file())} files")
    index = Path(root) / INDEX
    return lines + ([str(index)] if index.is_file() else [])


def finish_run(run_dir: Path, root: Path) -> list[Path]:
    """After a run folder is in place: ``latest`` points at it (for grouped runs), the index
    lists it. Returns the run's files, then the index."""
    run_dir = Path(run_dir)
    if run_dir.parent.resolve() != Path(root).resolve():
        mark_latest(run_dir)
    return [*written_files(run_dir), write_index(root)]


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _run_folders(root: Path) -> list[Path]:
    """Folders with a manifest.json one or two levels under ``root``; not ``latest``, staged
    folders, nor a part of a run (a walk-forward run's evaluation/)."""
    found = []
    for depth in ("*/manifest.json", "*/*/manifest.json"):
        for m in root.glob(depth):
            names = m.relative_to(root).parts[:-1]
            if LATEST in names or any(n.startswith(".") for n in names):
                continue
            if len(names) == 2 and (m.parent.parent / "manifest.json").is_file():
                continue
            found.append(m.parent)
    return found


def _sharpe(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _markets_skill(skill: dict[str, Any]) -> str:
    """A portfolio's skill cell: per market, its networks traded (backtest) or its fold x regime
    models traded (walk-forward)."""
    parts = []
    for sym, v in skill.items():
        if isinstance(v, dict):
            parts.append(f"{sym}: {v.get('traded')} of {v.get('fold_regime_models')} fold "
                         f"models traded")
        else:
            parts.append(f"{sym}: {', '.join(v) if v else 'flat'}")
    return "; ".join(parts)


def _skill_text(metrics: dict[str, Any]) -> str:
    if isinstance(metrics.get("portfolio"), dict):
        return _markets_skill(metrics["portfolio"].get("skill") or {})
    skill = metrics.get("skill") or {}
    if "n_cells" in metrics:  # a skill map: its corrected verdict
        return f"{len(metrics.get('keeps_skill') or [])} of {metrics['n_cells']} cells keep skill"
    if "traded" in skill:  # walk-forward: fold x regime models
        return f"{skill['traded']} of {skill.get('fold_regime_models')} fold models traded"
    order = ("bearish", "sideways", "bullish")
    rows = {k: skill[k] for k in order if isinstance(skill.get(k), dict) and "route" in skill[k]}
    if not rows:
        return ""
    traded = [k for k, v in rows.items() if not str(v["route"]).startswith("flat")]
    valid = sum(v.get("verdict") == "skill" for v in rows.values())
    return (f"{len(traded)} of {len(rows)} regimes traded"
            + (f" ({', '.join(traded)})" if traded else "")
            + f", {valid} with validated skill")


def index_row(folder: Path, root: Path) -> dict[str, Any]:
    """What the index shows of one run folder (from its manifest.json and metrics.json)."""
    manifest = _load(folder / "manifest.json")
    # a portfolio walk-forward keeps its out-of-sample report in stitched/
    stitched = folder / STITCHED
    shown = stitched if not (folder / "metrics.json").is_file() and stitched.is_dir() else folder
    metrics = _load(shown / "metrics.json")
    book = metrics.get("portfolio") if isinstance(metrics.get("portfolio"), dict) else metrics
    strat, bh = book.get("strategy") or {}, book.get("buy_and_hold") or {}
    period = metrics.get("period") or book.get("period") or {}
    rid = run_id(folder, root)
    page = next((shown.relative_to(folder) / p for p in PAGES if (shown / p).is_file()), None)
    return {"run": rid, "job": manifest.get("job") or rid.split("_")[0],
            "data": f"{manifest.get('dataset', '')} {manifest.get('timeframe') or ''}".strip(),
            "created": str(manifest.get("created", ""))[:19].replace("T", " "),
            "dates": (f"{str(period['start'])[:10]} to {str(period['end'])[:10]}"
                      if period else ""),
            "sharpe": _sharpe(strat.get("sharpe")) if metrics else "",
            "bh_sharpe": _sharpe(bh.get("sharpe")) if metrics else "",
            "trades": strat.get("trades", ""), "skill": _skill_text(metrics),
            "link": f"{rid}/{page.as_posix()}" if page else f"{rid}/"}


def write_index(root: Path) -> Path:
    """``root/index.html``: every run folder under ``root``, newest first, with its job, data,
    test dates, Sharpe beside buy-and-hold, trades, skill summary and a link to its page."""
    root = Path(root)
    rows = sorted((index_row(f, root) for f in _run_folders(root)),
                  key=lambda r: (r["created"], r["run"]), reverse=True)
    esc = html.escape
    cols = ("run", "job", "data", "created (UTC)", "test dates", "Sharpe", "buy & hold Sharpe",
            "trades", "skill guard")
    body = "".join(
        f"<tr><td><a href=\"{esc(r['link'])}\">{esc(r['run'])}</a></td><td>{esc(r['job'])}"
        f"</td><td>{esc(r['data'])}</td><td>{esc(r['created'])}</td><td>{esc(r['dates'])}</td>"
        f"<td>{esc(r['sharpe'])}</td><td>{esc(r['bh_sharpe'])}</td><td>{esc(str(r['trades']))}"
        f"</td><td>{esc(r['skill'])}</td></tr>" for r in rows)
    head = "".join(f"<th>{c}</th>" for c in cols)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>bt-lstm runs</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;"
            f"font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px}}</style></head>"
            f"<body><h1>bt-lstm runs ({len(rows)})</h1><p>Every run folder under "
            f"{esc(str(root))}, newest first. Sharpe: daily returns, 365 periods a year, over "
            f"each run's test dates.</p><table><tr>{head}</tr>{body}</table></body></html>\n")
    path = root / INDEX
    atomic_write_text(path, page)
    return path
