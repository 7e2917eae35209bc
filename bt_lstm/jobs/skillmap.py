"""The skill-map job: one walk-forward per cell (feature set x horizon x target x market),
resumable cell by cell, then the corrected table, its page and the run folder.

Layout of a run (``reports/skillmap_<NAME>/<stamp>/``): ``config.json`` (the grid, the
pipeline, the fold plan, the markets), ``manifest.json``, ``cells/<cell_id>/`` (each cell's
walk-forward run folder, resumed fold by fold), ``rows/<cell_id>.json`` (each finished cell's
figures, written atomically: a cell with a row is never run again), and at the end
``skillmap.csv``, ``metrics.json`` and ``index.html``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bt_lstm import __version__
from bt_lstm.backtest.metrics import PERIODS_PER_YEAR
from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import fingerprint_frame
from bt_lstm.data.files import atomic_write_json, atomic_write_text, clean_json
from bt_lstm.jobs.provenance import write_manifest
from bt_lstm.jobs.runs import mark_latest, resolve_run, write_index
from bt_lstm.jobs.skillmap_page import COLUMNS, skillmap_html
from bt_lstm.jobs.walk_forward import WalkForwardResult, run_walk_forward
from bt_lstm.research.skillmap import (
    ALPHA,
    DSR_LEVEL,
    Cell,
    cell_config,
    correct_rows,
    forecast_figures,
    make_grid,
    trading_figures,
    verdict,
)
from bt_lstm.research.walkforward import TaskProgress, WalkForwardSpec

logger = logging.getLogger(__name__)

PANEL = "per-market"  # each market its own walk-forward (the pooled panel: issue 25)


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


@dataclass
class MarketData:
    """One market of the map: its candles, names and where they came from (for --resume)."""

    name: str
    timeframe: str
    frame: pd.DataFrame
    source: dict[str, Any] = field(default_factory=dict)


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
                         SkillGrid.from_dict(saved["grid"]), list(saved["markets"]))


def _start(run_dir: Path, markets: list[MarketData], grid: SkillGrid, cfg: PipelineConfig,
           spec: WalkForwardSpec, resume: bool, force: bool, n_cells: int) -> None:
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
        "markets": [m.source for m in markets], "panel": PANEL})
    write_manifest(run_dir, job="skillmap", run_id=run_dir.name, data_fingerprints=prints,
                   markets={m.name: {"bars": len(m.frame), "first_bar": str(m.frame.index[0]),
                                     "last_bar": str(m.frame.index[-1]),
                                     "timeframe": m.timeframe} for m in markets},
                   n_cells=n_cells, panel=PANEL, seeds={"train": cfg.train.seed})


def cell_row(cell: Cell, cfg: PipelineConfig, result: WalkForwardResult) -> dict[str, Any]:
    """The figures of one finished cell (before the correction over cells)."""
    fc = result.forecasts
    daily = pd.read_csv(result.run_dir / "returns.csv", index_col=0)["strategy"]
    sk = result.metrics["skill"]
    models = sk["fold_regime_models"]
    return _numbers(clean_json({
        "market": cell.market, "features": cell.feature_label, "horizon": cell.horizon,
        "target": cell.target, "cell_id": cell.cell_id, "gap_bars": cfg.windows.gap_bars,
        "folds": len(result.folds),
        **forecast_figures(fc["forecast"].to_numpy(), fc["realised"].to_numpy(), cell.horizon,
                           cfg.train.seed),
        "fold_models": models, "with_skill": sk["with_skill"], "traded_models": sk["traded"],
        "skill_share": sk["with_skill"] / models if models else float("nan"),
        "trades": result.metrics["strategy"].get("trades"),
        **trading_figures(daily.to_numpy(), PERIODS_PER_YEAR)}))


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON stores it (no NaN: None) back to numbers: None is NaN again."""
    return {k: float("nan") if v is None else v for k, v in row.items()}


def _run_cell(cell: Cell, cfg: PipelineConfig, market: MarketData, spec: WalkForwardSpec,
              strategy_cls: type, run_dir: Path, jobs: int, scheduler: str | None,
              start_progress: Callable[[int, int], TaskProgress] | None) -> dict[str, Any]:
    wf_dir = run_dir / "cells" / cell.cell_id
    started = (wf_dir / "manifest.json").is_file()  # killed mid-cell: its folds are kept
    result = run_walk_forward(market.frame, market.name, market.timeframe, cfg, spec,
                              strategy_cls, wf_dir, market.source, jobs=jobs,
                              scheduler=scheduler, resume=started, tearsheet=False,
                              force=wf_dir.exists() and not started,
                              start_progress=start_progress, reports_root=run_dir / "cells")
    row = cell_row(cell, cfg, result)
    atomic_write_json(run_dir / "rows" / f"{cell.cell_id}.json", clean_json(row))
    return row


def run_skillmap(markets: list[MarketData], grid: SkillGrid, cfg: PipelineConfig,
                 spec: WalkForwardSpec, strategy_cls: type, run_dir: Path, jobs: int = 1,
                 scheduler: str | None = None, resume: bool = False, force: bool = False,
                 on_cell: Callable[[CellEvent], None] | None = None,
                 start_progress: Callable[[int, int], TaskProgress] | None = None,
                 reports_root: Path | None = None) -> SkillMapResult:
    """Run (or finish) the walk-forward of every cell, then score and correct the map.

    Notes
    -----
    Every cell is planned and its config checked before the first cell trains. A cell runs
    exactly as ``bt-lstm walk-forward`` with the run's fold plan and the cell's features,
    horizon and target (``dataclasses.replace``; the purge gap raised to the horizon where
    shorter, logged); its row is written atomically as soon as it is done, so a killed map
    resumes with every finished cell and the folds of the cell it was in. The deflated
    Sharpe's N and Holm's family are every cell of the grid, all markets included.
    """
    cells = make_grid(grid.feature_sets, grid.horizons, grid.targets, [m.name for m in markets])
    by_name = {m.name: m for m in markets}
    plans = [(c, *cell_config(cfg, c, len(cells))) for c in cells]  # bad cells fail here
    _start(run_dir, markets, grid, cfg, spec, resume, force, len(cells))
    root = Path(reports_root) if reports_root is not None else run_dir.parent
    if not resume and run_dir.parent.resolve() != root.resolve():
        mark_latest(run_dir)
    rows, ran = [], 0
    for i, (cell, ccfg, raised) in enumerate(plans):
        saved = run_dir / "rows" / f"{cell.cell_id}.json"
        if saved.is_file():
            rows.append(_numbers(json.loads(saved.read_text())))
            _tell(on_cell, CellEvent(i, len(cells), cell, "kept", rows[-1]))
            continue
        note = (f"purge gap raised from {cfg.windows.gap_bars} to {ccfg.windows.gap_bars} bars "
                f"(>= horizon {cell.horizon})" if raised else "")
        if note:
            logger.info("%s on %s: %s", cell.label, cell.market, note)
        _tell(on_cell, CellEvent(i, len(cells), cell, "start", note=note))
        t0 = time.perf_counter()
        rows.append(_run_cell(cell, ccfg, by_name[cell.market], spec, strategy_cls, run_dir,
                              jobs, scheduler, start_progress))
        ran += 1
        _tell(on_cell, CellEvent(i, len(cells), cell, "done", rows[-1],
                                 time.perf_counter() - t0, note))
    rows = correct_rows(rows)
    text = verdict(rows)
    _write_outputs(run_dir, rows, text, cfg, spec, grid, markets)
    write_index(root)
    return SkillMapResult(run_dir, rows, text, ran)


def _tell(on_cell: Callable[[CellEvent], None] | None, event: CellEvent) -> None:
    if on_cell is not None:
        on_cell(event)


def _write_outputs(run_dir: Path, rows: list[dict[str, Any]], text: str, cfg: PipelineConfig,
                   spec: WalkForwardSpec, grid: SkillGrid, markets: list[MarketData]) -> None:
    table = pd.DataFrame(rows)[list(COLUMNS)]
    atomic_write_text(run_dir / "skillmap.csv", table.to_csv(index=False))
    keep = [r["cell_id"] for r in rows if r["keeps_skill"]]
    metrics = clean_json({
        "dataset": "+".join(m.name for m in markets), "timeframe": markets[0].timeframe,
        "run_id": run_dir.name, "library_version": __version__, "panel": PANEL,
        "grid": grid.to_dict(), "walk_forward": asdict(spec), "n_cells": len(rows),
        "rule": {"alpha": ALPHA, "correction": "Holm over every cell",
                 "dsr_level": DSR_LEVEL, "dsr_n_trials": len(rows)},
        "keeps_skill": keep, "verdict": text,
        "costs": {"commission": cfg.strategy.commission, "slippage": cfg.strategy.slippage}})
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_text(run_dir / "index.html", skillmap_html(metrics, table))
