"""Skill-map speed benchmark -> JSON: cells per hour of a grid on real markets.

    nice python benchmarks/bench_skillmap.py --symbols BTCUSDT,ETHUSDT \
        --data-dir ../shared/data --start 2019-01-01 --jobs 2 --out reports/bench_skillmap.json

Default grid: feature sets ``price;price,calendar`` x horizons ``1,3,6`` x target ``logret``
x the markets (12 cells on two markets). Every pipeline and fold flag of ``bt-lstm skillmap``
is accepted (a reduced config is written into the JSON with the figures); ``--run-id`` keeps
the map's report under ``--reports-dir``, else it is thrown away. Reports the wall
time of the whole map, of each cell, cells per hour, the machine's CPU count and its load
average before and after. A benchmark, not a test: nothing here asserts on time.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bt_lstm.cli import skillmap as cli  # noqa: E402
from bt_lstm.cli.args import build_config  # noqa: E402
from bt_lstm.cli.common import setup_logging  # noqa: E402
from bt_lstm.cli.walk_forward import fold_spec  # noqa: E402
from bt_lstm.data.candles import infer_bar  # noqa: E402
from bt_lstm.jobs.skillmap import run_skillmap  # noqa: E402
from bt_lstm.jobs.skillmap_cells import CellRun  # noqa: E402
from strategies.lstm_strategy import RegimeLSTMStrategy  # noqa: E402
from strategies.portfolio import PortfolioStrategy  # noqa: E402


def main() -> int:
    """Parse ``bt-lstm skillmap``'s flags (+ ``--out``), run the map in a temporary folder,
    write the JSON."""
    parser = cli.build_parser("bench_skillmap.py")
    parser.add_argument("--out", default="bench_skillmap.json", help="where the JSON goes")
    parser.set_defaults(grid_features="price;price,calendar", horizons="1,3,6",
                        targets="logret")
    args = parser.parse_args()
    setup_logging(True)
    grid, cfg = cli._grid(args), build_config(args)
    markets = cli.load_markets(cli.market_sources(args), cfg, grid)
    spec = fold_spec(args, infer_bar(markets[0].frame.index))
    cells: list[dict] = []
    ticks = {"t": time.perf_counter()}

    def on_cell(event) -> None:
        if event.status == "start":
            ticks["t"] = time.perf_counter()
            return
        cells.append({"cell": event.cell.cell_id,
                      "seconds": round(time.perf_counter() - ticks["t"], 1)})
        print(f"{event.index + 1}/{event.total} {event.cell.cell_id}: {cells[-1]['seconds']} s",
              file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        # --run-id keeps the map's report under --reports-dir; else it goes with the temp folder
        root = Path(args.reports_dir) if args.run_id else Path(tmp)
        t0 = time.perf_counter()
        run = CellRun(RegimeLSTMStrategy, PortfolioStrategy, jobs=args.jobs,
                      scheduler=args.scheduler)
        result = run_skillmap(markets, grid, cfg, spec, run, root / (args.run_id or "map"),
                              panel=args.panel, on_cell=on_cell, reports_root=root)
        wall = time.perf_counter() - t0
    out = {"markets": {m.name: {"bars": len(m.frame), "first": str(m.frame.index[0]),
                                "last": str(m.frame.index[-1])} for m in markets},
           "timeframe": markets[0].timeframe, "grid": grid.to_dict(), "n_cells": len(cells),
           "walk_forward": spec.to_dict(), "jobs": args.jobs,
           "panel": args.panel if len(markets) > 1 else "per-market",
           "config": {"lookback": cfg.windows.lookback, "hidden_size": cfg.model.hidden_size,
                      "epochs": cfg.train.epochs, "patience": cfg.train.patience,
                      "batch_size": cfg.train.batch_size, "arch": cfg.model.arch},
           "wall_s": round(wall, 1), "cells_per_hour": round(len(cells) / wall * 3600, 2),
           "cells": cells, "keeps_skill": [r["cell_id"] for r in result.rows
                                           if r["keeps_skill"]],
           "verdict": result.verdict, "report": str(result.run_dir) if args.run_id else None,
           "cpu_count": os.cpu_count(), "load_before": load_before,
           "load_after": os.getloadavg(), "argv": sys.argv[1:]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("n_cells", "wall_s", "cells_per_hour")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
