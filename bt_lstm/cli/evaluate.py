"""Score forecasts on test bars beside baselines: MSE, RMSE, MAE, R², direction, Spearman IC, DM.

The regime models are compared, per regime and overall, with a zero forecast, the training
mean, last-return persistence, ridge regression on the flattened window, one global LSTM
without regimes and an MLP, all fitted on the same training data, and each against the zero
forecast with a Diebold–Mariano test.

Examples
--------
    python runners/evaluate.py                          # the main job's models on SAMPLE
    python runners/evaluate.py --csv ../shared/data/BTCUSDT_4h.csv
    python runners/evaluate.py --run reports/wf_BTCUSDT_4h/latest
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bt_lstm.cli.args import DATA, add_group, add_pipeline_groups, build_config
from bt_lstm.cli.common import load_data, main_job_models, make_parser, run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm evaluate`` (``prog``: the name its usage lines show;
    default the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_group(parser, "data (default: the bundled synthetic SAMPLE market)", *DATA)
    add_pipeline_groups(parser)
    add_group(parser, "run", "run", "models_dir", "reports_dir", "quiet")
    return parser


def _run_mode(args: argparse.Namespace):
    from bt_lstm.config import PipelineConfig
    from bt_lstm.jobs.datasets import trim_dates
    from bt_lstm.jobs.evaluate import walk_forward_forecasts
    from bt_lstm.jobs.runs import resolve_run
    from bt_lstm.research.walkforward import WalkForwardSpec, make_folds

    run_dir = resolve_run(Path(args.run))  # a run folder, or a group's latest run
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"--run {run_dir}: not a walk-forward run folder (config.json missing)")
    given = [f for f in ("symbol", "csv", "config") if getattr(args, f)]
    if given:
        raise ValueError(f"--run uses the run's own data and config; drop --{given[0]}")
    saved = json.loads((run_dir / "config.json").read_text())
    for key, value in saved["source"].items():
        setattr(args, key, value)
    cfg = PipelineConfig.from_dict(saved["pipeline"])
    frame, dataset, timeframe = load_data(args, cfg, check_split=False)
    frame = trim_dates(frame, args.start, args.end)
    folds = make_folds(len(frame), WalkForwardSpec(**saved["walk_forward"]), cfg)
    table = walk_forward_forecasts(frame, cfg, folds, run_dir / "folds")
    scope = f"walk-forward run {run_dir.name}, {len(folds)} folds' test spans"
    return table, dataset, timeframe, scope, run_dir / "evaluation"


def _main_mode(args: argparse.Namespace):
    from bt_lstm.jobs.evaluate import main_job_forecasts

    cfg = build_config(args)
    frame, dataset, timeframe = load_data(args, cfg)
    table = main_job_forecasts(frame, cfg, main_job_models(args, cfg, frame, dataset, timeframe))
    out = Path(args.reports_dir) / f"evaluate_{dataset}_{timeframe}"
    return table, dataset, timeframe, "the main job's test part", out


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm evaluate`` with ``argv`` (default: the process's arguments); return the exit
    code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, job)


def job(args: argparse.Namespace) -> int:
    """Score the test bars' forecasts of the main job's models (or of every fold of ``--run``)
    beside the baselines; print the table and write the evaluation folder."""
    from bt_lstm.jobs.evaluate import format_table, score_models, write_evaluation

    if args.run:
        table, dataset, timeframe, scope, out = _run_mode(args)
    else:
        table, dataset, timeframe, scope, out = _main_mode(args)
    if not len(table):
        raise ValueError("no test bar has a forecast to score; use more data")
    scores = score_models(table)
    header = {"dataset": dataset, "timeframe": timeframe, "scope": scope,
              "period": {"start": str(table.index[0]), "end": str(table.index[-1]),
                         "bars": len(table)},
              "regime_bars": {str(r): int((table["regime"] == r).sum()) for r in range(3)}}
    files = write_evaluation(out, table, scores, header, grouped=not args.run)
    print(f"{dataset} {timeframe}: {scope}, {header['period']['start']} -> "
          f"{header['period']['end']} ({len(table)} bars)")
    print(format_table(scores))
    print(f"\nevaluation: {files[0].parent}")
    for f in files:
        print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
