"""Tuning speed benchmark -> JSON: the same run (one study per network: pooled, then each
regime) with and without pruning.

    python benchmarks/bench_tune.py --csv ../shared/data/BTCUSDT_4h.csv --trials 60 --jobs 2 \
        --out reports/bench_tune.json

Reports, for each mode, wall time, trials completed / pruned / failed and trials per minute in
all and per study (``--trials`` is per study). A benchmark, not a test: nothing here asserts
on time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bt_lstm.cli.args import DATA, add_flags, add_pipeline_groups, build_config  # noqa: E402
from bt_lstm.cli.common import load_data  # noqa: E402
from bt_lstm.jobs.tune import run_tune  # noqa: E402
from bt_lstm.research.search_space import load_space  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, *DATA)
    add_pipeline_groups(parser)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--space", default=None)
    parser.add_argument("--modes", default="prune,no-prune")
    parser.add_argument("--out", default="bench_tune.json")
    args = parser.parse_args()
    cfg = build_config(args)
    frame, dataset, timeframe = load_data(args, cfg)
    space = load_space(args.space)
    out = {"dataset": dataset, "timeframe": timeframe, "bars": len(frame),
           "trials": args.trials, "jobs": args.jobs, "epochs_cap": cfg.train.epochs,
           "space": space, "cpu_count": os.cpu_count(), "argv": sys.argv[1:], "modes": {}}
    for mode in args.modes.split(","):
        starts: dict[str, float] = {}  # study -> when it started
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = run_tune(frame, dataset, timeframe, cfg, space, n_trials=args.trials,
                           reports_dir=Path(tmp), study=f"bench-{mode}", jobs=args.jobs,
                           prune=(mode == "prune"),
                           prepare=lambda spec: starts.setdefault(spec.study_name,
                                                                  time.perf_counter()))
            wall = time.perf_counter() - t0
        s = res.study
        out["modes"][mode] = {"wall_s": round(wall, 1), "n_studies": len(s["studies"]),
                              "n_trials": s["n_trials"], "n_complete": s["n_complete"],
                              "n_pruned": s["n_pruned"], "n_failed": s["n_failed"],
                              "trials_per_minute": round(s["n_trials"] / wall * 60, 2),
                              "best_value": (s["best"] or {}).get("value"),
                              "best_params": (s["best"] or {}).get("params"),
                              "studies": _per_study(s, starts, t0 + wall)}
        print(json.dumps({mode: out["modes"][mode]}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


def _per_study(s: dict, starts: dict[str, float], end: float) -> dict[str, dict]:
    """Each study's counts and wall time (to the next study's start; the last one's also holds
    the final fit of the tuned networks that picks the threshold)."""
    order = [s["studies"][k]["study"] for k in s["study_order"]]
    out = {}
    for i, key in enumerate(s["study_order"]):
        one = s["studies"][key]
        stop = starts.get(order[i + 1], end) if i + 1 < len(order) else end
        wall = stop - starts.get(one["study"], stop)
        out[key] = {"wall_s": round(wall, 1), "n_trials": one["n_trials"],
                    "n_complete": one["n_complete"], "n_pruned": one["n_pruned"],
                    "n_failed": one["n_failed"],
                    "trials_per_minute": round(one["n_trials"] / wall * 60, 2) if wall else None,
                    "best_value": (one["best"] or {}).get("value")}
    return out


if __name__ == "__main__":
    sys.exit(main())
