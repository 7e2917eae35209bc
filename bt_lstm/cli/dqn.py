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
    bt-lstm dqn --csv ../shared/data/BTCUSDT_4h.csv --allow-short --no-regime-lstm
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bt_lstm.cli.common import (
    add_data_args,
    add_output_args,
    add_pipeline_args,
    build_config,
    load_dataset,
    main_job_models,
    make_parser,
    run_cli,
    setup_logging,
)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__, prog)
    parser.conflict_handler = "resolve"  # --features below means the DQN's observation
    add_data_args(parser)
    add_pipeline_args(parser)
    g = parser.add_argument_group("DQN agent")
    g.add_argument("--qnet", choices=("lstm", "dense"), default="lstm",
                   help="Q-network: lstm (LSTM 64 -> LSTM 32 -> Dense 64 -> 3, default) or dense "
                        "(the feed-forward baseline)")
    g.add_argument("--window", type=int, default=50, help="bars per observation (default 50)")
    g.add_argument("--features", dest="dqn_features", choices=("price", "pipeline"),
                   default="price",
                   help="price: the window's closes as log(close/last close) / the window's "
                        "return std (default); pipeline: our scaled feature window (the "
                        "scaler fitted on training bars)")
    g.add_argument("--timesteps", type=int, default=20_000,
                   help="training env steps, one bar each (default 20000)")
    g.add_argument("--eval-every", type=int, default=2_000, metavar="N",
                   help="steps between validation episodes for model selection (default 2000)")
    g.add_argument("--learning-starts", type=int, default=1_000, metavar="N",
                   help="random steps before the first update (default 1000)")
    g.add_argument("--envs", type=int, default=4, metavar="N",
                   help="training envs stepped together, staggered over the training span "
                        "(actions of all in one batch; step counts are of all together; "
                        "default 4, 1 = one env)")
    g.add_argument("--seeds", type=int, default=1, metavar="K",
                   help="train K agents (seeds seed .. seed+K-1) and report every one and "
                        "their spread (default 1)")
    g.add_argument("--allow-short", action="store_true", help="Sell goes short, not flat")
    run = parser.add_argument_group("run")
    run.add_argument("--retrain", action="store_true",
                     help="train again and replace a saved agent (never done silently)")
    run.add_argument("--no-regime-lstm", action="store_true",
                     help="skip the regime-LSTM comparison (it trains the main job's models "
                          "if none are saved)")
    add_output_args(run, models="where agents are kept (default: models)",
                    reports="where dqn_<DATASET>_<timeframe>_<qnet>/ goes (default: reports)",
                    tearsheet="skip the QuantStats tearsheet")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet)

    def job() -> int:
        from bt_lstm.jobs.dqn import format_dqn, run_dqn_job
        from bt_lstm.rl.spec import DQNConfig
        from strategies.dqn_strategy import DQNStrategy
        from strategies.lstm_strategy import RegimeLSTMStrategy

        cfg = build_config(args)
        frame, dataset, timeframe = load_dataset(args, cfg)
        dcfg = DQNConfig(qnet=args.qnet, window=args.window, features=args.dqn_features,
                         allow_short=args.allow_short, timesteps=args.timesteps,
                         eval_every=args.eval_every, learning_starts=args.learning_starts,
                         envs=args.envs, seed=cfg.train.seed)
        regime = None
        if not args.no_regime_lstm:
            regime = (main_job_models(args, cfg, frame, dataset, timeframe), RegimeLSTMStrategy)
        name = f"dqn_{dataset}_{timeframe}_{args.qnet}"

        def progress(step: int, score: float) -> None:
            if not args.quiet:
                print(f"  step {step}: validation log return {score:.4f}", file=sys.stderr)

        metrics = run_dqn_job(frame, dataset, timeframe, cfg, dcfg, DQNStrategy,
                              Path(args.models_dir) / name, Path(args.reports_dir) / name,
                              retrain=args.retrain, seeds=args.seeds,
                              tearsheet=not args.no_tearsheet, regime=regime, progress=progress)
        print(f"{dataset} {timeframe} DQN ({args.qnet}), test {metrics['period']['start']} .. "
              f"{metrics['period']['end']}")
        print(format_dqn(metrics))
        from bt_lstm.backtest.reports import format_luck

        print(f"\nfirst seed: {format_luck(metrics['statistics'])}")
        print(metrics["statistics"]["reading"])
        print(f"\nreport: {metrics['run']['dir']}")
        for f in metrics["run"]["files"]:
            print(f"  {f}")
        return 0

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
