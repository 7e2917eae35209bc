"""DQN trader: an LSTM (or Dense) Q-network trained with Stable-Baselines3's DQN.

Trains on the training span (the same split as the main job), keeps the weights of the best
greedy validation episode, backtests the test span in Backtrader and writes
reports/dqn_<DATASET>_<timeframe>_<qnet>/ (tearsheet, metrics beside buy-and-hold and the
regime-LSTM strategy on the same bars, action counts, every seed with their spread). A saved
agent (models/dqn_<DATASET>_<timeframe>_<qnet>/qnet.pt + qnet.json) is reused only if its JSON
matches the request; a different one is refused, never overwritten without --retrain.

Examples
--------
    python runners/train_dqn.py --symbol BTCUSDT
    python runners/train_dqn.py --symbol BTCUSDT --qnet dense --seeds 3 --timesteps 30000
    bt-lstm dqn --csv ../shared/data/BTCUSDT_4h.csv --allow-short --observation pipeline
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_lstm.cli.args import (
    DATA,
    add_group,
    add_pipeline_groups,
    build_config,
    field_changes,
)
from bt_lstm.cli.common import load_data, main_job_models, make_parser, run_cli

AGENT = ("qnet", "window", "observation", "timesteps", "eval_every", "learning_starts", "envs",
         "seeds", "allow_short")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``bt-lstm dqn`` (``prog``: the name its usage lines show; default
    the script's). The docs' CLI reference is generated from it."""
    parser = make_parser(__doc__, prog)
    add_group(parser, "data (default: the bundled synthetic SAMPLE market)", *DATA)
    add_pipeline_groups(parser)
    add_group(parser, "DQN agent (defaults: DQNConfig's)", *AGENT)
    add_group(parser, "run", "retrain", "no_regime_lstm", "models_dir", "reports_dir",
              "no_tearsheet", "quiet")
    return parser


def dqn_config(args: argparse.Namespace, seed: int):
    """``DQNConfig``'s defaults with the DQN flags given (and the pipeline's seed)."""
    from bt_lstm.rl.spec import DQNConfig

    return DQNConfig(**field_changes(args, "dqn.").get("dqn", {}), seed=seed)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``bt-lstm dqn`` with ``argv`` (default: the process's arguments); return the exit
    code: 0 done, 2 a user mistake (one line on stderr), 130 interrupted."""
    return run_cli(build_parser(prog), argv, job)


def job(args: argparse.Namespace) -> int:
    """Train (or reuse) the DQN agent(s) on the training span, select on the validation span,
    backtest the test span beside buy-and-hold and the regime-LSTM strategy, and write the
    report folder."""
    from bt_lstm.backtest.reports import format_luck
    from bt_lstm.jobs.dqn import format_dqn, run_dqn_job
    from strategies.dqn_strategy import DQNStrategy
    from strategies.lstm_strategy import RegimeLSTMStrategy

    cfg = build_config(args)
    dcfg = dqn_config(args, cfg.train.seed)
    if dcfg.features == "pipeline" and cfg.features.groups != ("price",):
        raise ValueError(f"--observation pipeline reads the price features only; --features "
                         f"{','.join(cfg.features.groups)} applies to the regime LSTM's "
                         f"comparison, not to the agent (use --features price or none)")
    frame, dataset, timeframe = load_data(args, cfg)
    regime = None
    if not args.no_regime_lstm:
        regime = (main_job_models(args, cfg, frame, dataset, timeframe), RegimeLSTMStrategy)
    name = f"dqn_{dataset}_{timeframe}_{dcfg.qnet}"

    def progress(step: int, score: float) -> None:
        if not args.quiet:
            print(f"  step {step}: validation log return {score:.4g}", file=sys.stderr)

    metrics = run_dqn_job(frame, dataset, timeframe, cfg, dcfg, DQNStrategy,
                          Path(args.models_dir) / name, Path(args.reports_dir) / name,
                          retrain=args.retrain, seeds=args.seeds,
                          tearsheet=not args.no_tearsheet, regime=regime, progress=progress)
    print(f"{dataset} {timeframe} DQN ({dcfg.qnet}), test {metrics['period']['start']} .. "
          f"{metrics['period']['end']}")
    print(format_dqn(metrics))
    print(f"\nfirst seed: {format_luck(metrics['statistics'])}")
    print(metrics["statistics"]["reading"])
    print(f"\nreport: {metrics['run']['dir']}")
    for f in metrics["run"]["files"]:
        print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
