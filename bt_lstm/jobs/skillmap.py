"""The skill-map job: the walk-forward of every cell (feature set x horizon x target x market),
resumable cell by cell, then the corrected table, its page and the run folder.

With ``panel`` per-market each market of a cell runs its own walk-forward; with pooled (the
default with several markets) the cells of one setting run as one panel walk-forward over all
the markets (``bt_lstm.jobs.skillmap_cells``), one row per market either way.

Layout of a run (``reports/skillmap_<NAME>/<stamp>/``): ``config.json`` (the grid, the
pipeline, the fold plan, the markets, the panel), ``manifest.json``, ``cells/<cell_id>/``
(each cell's walk-forward run folder, resumed fold by fold; pooled:
``cells/<setting>_panel/``, one per setting), ``rows/<cell_id>.json`` (each finished market
cell's figures, written atomically: a cell with a row is never run again), and at the end
``skillmap.csv``, ``metrics.json`` and ``index.html``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bt_lstm import __version__
from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import fingerprint_frame
from bt_lstm.data.files import atomic_write_json, atomic_write_text, clean_json
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import mark_latest, resolve_run, write_index
from bt_lstm.jobs.skillmap_cells import (
    CellRun,
    MarketData,
    read_row,
    run_market_cell,
    run_panel_cell,
)
from bt_lstm.jobs.skillmap_page import COLUMNS, skillmap_html
from bt_lstm.research.panel import PANEL_MODES
from bt_lstm.research.skillmap import (
    ALPHA,
    DSR_LEVEL,
    Cell,
    cell_config,
    correct_rows,
    make_grid,
    verdict,
)
from bt_lstm.research.walkforward import WalkForwardSpec

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class SkillGrid:
    """The axes of the map besides the markets."""

    feature_sets: tuple[tuple[str, ...], ...]
    horizons: tuple[int, ...]
    targets: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (config.json), read back by :meth:`from_dict`."""
        return {"feature_sets": [list(f) for f in self.feature_sets],
                "horizons": list(self.horizons), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkillGrid:
        """The grid saved by :meth:`to_dict`."""
        return cls(tuple(tuple(f) for f in data["feature_sets"]), tuple(data["horizons"]),
                   tuple(data["targets"]))


@dataclass(frozen=True)
class CellEvent:
    """Progress of one cell: ``status`` is start, done (ran now) or kept (an earlier run's)."""

    index: int
    total: int
    cell: Cell
    status: str
    row: dict[str, Any] | None = None
    seconds: float = 0.0
    note: str = ""


@dataclass
class SkillMapResult:
    """What ``run_skillmap`` returns: the run folder, the corrected rows and the verdict."""

    run_dir: Path
    rows: list[dict[str, Any]]
    verdict: str
    ran: int  # cells computed by this call (the rest were kept from an interrupted run)


@dataclass(frozen=True)
class SavedSkillMap:
    """What ``--resume`` reads back from a skill map's config.json."""

    run_dir: Path
    cfg: PipelineConfig
    spec: WalkForwardSpec
    grid: SkillGrid
    sources: list[dict[str, Any]]
    panel: str = "per-market"  # maps from before the pooled panel ran per market


def load_saved_skillmap(run_dir: Path) -> SavedSkillMap:
    """The settings of the skill map in ``run_dir`` (a run, or a group's newest run).

    Raises
    ------
    ValueError
        No skill map there (config.json missing or another job's).
    """
    run_dir = resolve_run(Path(run_dir))
    path = run_dir / "config.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if "grid" not in saved:
        raise ValueError(f"--resume {run_dir.name}: no skill map at {run_dir} (config.json "
                         f"missing or not a skill map's)")
    return SavedSkillMap(run_dir, PipelineConfig.from_dict(saved["pipeline"]),
                         WalkForwardSpec(**saved["walk_forward"]),
                         SkillGrid.from_dict(saved["grid"]), list(saved["markets"]),
                         saved.get("panel", "per-market"))


def map_panel(panel: str, n_markets: int) -> str:
    """The panel a map runs: ``panel`` with several markets; one market runs alone
    (per-market: a panel of one is its own walk-forward).

    Raises
    ------
    ValueError
        ``panel`` is not a panel mode.
    """
    if panel not in PANEL_MODES:
        raise ValueError(f"--panel {panel!r}: use one of {', '.join(PANEL_MODES)}")
    return panel if n_markets > 1 else "per-market"


def _start(run_dir: Path, markets: list[MarketData], grid: SkillGrid, cfg: PipelineConfig,
           spec: WalkForwardSpec, resume: bool, force: bool, n_cells: int, panel: str) -> None:
    prints = {m.name: fingerprint_frame(m.frame) for m in markets}
    if resume:
        manifest = run_dir / "manifest.json"
        saved = json.loads(manifest.read_text()) if manifest.is_file() else {}
        if saved.get("data_fingerprints") != prints:
            raise ValueError(f"{run_dir}: the data changed since this skill map started (or it "
                             f"has no manifest.json); start a new run instead of --resume")
        return
    if run_dir.exists() and not force:
        raise ValueError(f"{run_dir} already exists; runs are never overwritten: pass another "
                         f"--run-id, --resume to finish it, or --force to move it aside")
    if run_dir.exists():
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
        run_dir.rename(aside)
        logger.warning("--force: the existing run was moved to %s", aside)
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", {
        "pipeline": cfg.to_dict(), "walk_forward": spec.to_dict(), "grid": grid.to_dict(),
        "markets": [m.source for m in markets], "panel": panel})
    write_manifest(run_dir, job="skillmap", run_id=run_dir.name, data_fingerprints=prints,
                   markets={m.name: {"bars": len(m.frame), "first_bar": str(m.frame.index[0]),
                                     "last_bar": str(m.frame.index[-1]),
                                     "timeframe": m.timeframe} for m in markets},
                   n_cells=n_cells, panel=panel, seeds={"train": cfg.train.seed})


def run_units(cells: list[Cell], panel: str) -> list[list[Cell]]:
    """The cells that run together: each alone (per-market), or per setting every market's
    cell of it (pooled: one panel walk-forward), settings in the order of the map."""
    if panel != "pooled":
        return [[c] for c in cells]
    units: dict[tuple, list[Cell]] = {}
    for c in cells:
        units.setdefault((c.features, c.horizon, c.target), []).append(c)
    return list(units.values())


def run_skillmap(markets: list[MarketData], grid: SkillGrid, cfg: PipelineConfig,
                 spec: WalkForwardSpec, run: CellRun, run_dir: Path, panel: str = "pooled",
                 resume: bool = False, force: bool = False,
                 on_cell: Callable[[CellEvent], None] | None = None,
                 reports_root: Path | None = None) -> SkillMapResult:
    """Run (or finish) the walk-forward of every cell, then score and correct the map.

    Notes
    -----
    Every cell is planned and its config checked before the first cell trains. A cell runs
    exactly as ``bt-lstm walk-forward`` with the run's fold plan and the cell's features,
    horizon and target (``dataclasses.replace``; the purge gap raised to the horizon where
    shorter, logged): one market alone, or with ``panel`` pooled and several markets the
    setting's panel walk-forward over all of them. Each market's row is written atomically as
    soon as its cell is done, so a killed map resumes with every finished cell and the folds
    of the cell it was in. The deflated Sharpe's N and Holm's family are every cell of the
    grid, all markets included.
    """
    panel = map_panel(panel, len(markets))
    cells = make_grid(grid.feature_sets, grid.horizons, grid.targets, [m.name for m in markets])
    by_name = {m.name: m for m in markets}
    plans = {c.cell_id: cell_config(cfg, c, len(cells)) for c in cells}  # bad cells fail here
    _start(run_dir, markets, grid, cfg, spec, resume, force, len(cells), panel)
    root = Path(reports_root) if reports_root is not None else run_dir.parent
    if not resume and run_dir.parent.resolve() != root.resolve():
        mark_latest(run_dir)
    order = {c.cell_id: i for i, c in enumerate(cells)}
    rows: dict[str, dict[str, Any]] = {}
    ran = 0
    for unit in run_units(cells, panel):
        kept = {c.cell_id: read_row(run_dir, c) for c in unit}
        if all(r is not None for r in kept.values()):
            for c in unit:
                rows[c.cell_id] = kept[c.cell_id]
                _tell(on_cell, CellEvent(order[c.cell_id], len(cells), c, "kept",
                                         rows[c.cell_id]))
            continue
        ccfg, raised = plans[unit[0].cell_id]
        note = _note(unit, cfg, ccfg, raised)
        _tell(on_cell, CellEvent(order[unit[0].cell_id], len(cells), unit[0], "start",
                                 note=note))
        t0 = time.perf_counter()
        if len(unit) > 1:
            done = run_panel_cell(unit, ccfg, markets, spec, run, run_dir)
        else:
            done = {unit[0].cell_id: run_market_cell(unit[0], ccfg, by_name[unit[0].market],
                                                     spec, run, run_dir)}
        took = time.perf_counter() - t0
        for c in unit:
            rows[c.cell_id] = done[c.cell_id]
            ran += kept[c.cell_id] is None
            _tell(on_cell, CellEvent(order[c.cell_id], len(cells), c, "done", rows[c.cell_id],
                                     took, note))
    table = correct_rows([rows[c.cell_id] for c in cells])
    text = verdict(table)
    _write_outputs(run_dir, table, text, cfg, spec, grid, markets, panel)
    write_index(root)
    return SkillMapResult(run_dir, table, text, ran)


def _note(unit: list[Cell], cfg: PipelineConfig, ccfg: PipelineConfig, raised: bool) -> str:
    """The words a cell's start line adds: the raised purge gap, the pooled panel."""
    parts = []
    if raised:
        parts.append(f"purge gap raised from {cfg.windows.gap_bars} to "
                     f"{ccfg.windows.gap_bars} bars (>= horizon {unit[0].horizon})")
    if len(unit) > 1:
        parts.append("one pooled panel walk-forward over " + ", ".join(c.market for c in unit))
    note = "; ".join(parts)
    if note:
        logger.info("%s: %s", unit[0].label, note)
    return note


def _tell(on_cell: Callable[[CellEvent], None] | None, event: CellEvent) -> None:
    if on_cell is not None:
        on_cell(event)


def _write_outputs(run_dir: Path, rows: list[dict[str, Any]], text: str, cfg: PipelineConfig,
                   spec: WalkForwardSpec, grid: SkillGrid, markets: list[MarketData],
                   panel: str) -> None:
    table = pd.DataFrame(rows)[list(COLUMNS)]
    atomic_write_text(run_dir / "skillmap.csv", table.to_csv(index=False))
    keep = [r["cell_id"] for r in rows if r["keeps_skill"]]
    metrics = clean_json({
        "dataset": "+".join(m.name for m in markets), "timeframe": markets[0].timeframe,
        "run_id": run_dir.name, "library_version": __version__, "panel": panel,
        "grid": grid.to_dict(), "walk_forward": asdict(spec), "n_cells": len(rows),
        "rule": {"alpha": ALPHA, "correction": "Holm over every cell",
                 "dsr_level": DSR_LEVEL, "dsr_n_trials": len(rows)},
        "keeps_skill": keep, "verdict": text,
        "costs": {"commission": cfg.strategy.commission, "slippage": cfg.strategy.slippage}})
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_text(run_dir / "index.html", skillmap_html(metrics, table))
