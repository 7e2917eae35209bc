"""The speed benchmark job: backtest vs a no-model strategy, inference latency, training
throughput, peak memory and a cached rerun of the main job, written to one JSON.

Every figure is a median over repetitions; the machine is recorded beside them. Timings are
measured here and written to JSON, never asserted in tests.
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.backtest.engine import gc_frozen, make_cerebro, run_backtest
from bt_lstm.config import PipelineConfig
from bt_lstm.data.candles import load_ohlcv
from bt_lstm.data.files import atomic_write_json
from bt_lstm.data.synthetic import make_market
from bt_lstm.jobs.provenance import provenance
from bt_lstm.models.forecast import load_forecaster
from bt_lstm.models.speed import bench_inference, bench_training, median_time, torch_info
from bt_lstm.research.pipeline import fit_pipeline, prepare_windows
from bt_lstm.signals.windows import split_bounds

REPO = Path(__file__).resolve().parents[2]  # a checkout's root (only to find ../shared/data)
REAL_DATA_ENV = "BT_LSTM_REAL_DATA"


def machine_info() -> dict[str, Any]:
    """Cores, torch threads and CUDA, beside the code and package versions of the run."""
    prov = provenance()
    return {**torch_info(), **prov, "bt_lstm": prov["library_version"]}


def bench_backtest(frame: pd.DataFrame, model_dir: Path, strategy_cls: type, baseline_cls: type,
                   cfg: PipelineConfig, reps: int) -> dict[str, Any]:
    """Wall time of the model strategy (batch forecasts + Backtrader) vs a no-model strategy.

    Both run on the same feed class, the same broker (cash, commission, slippage) and the same
    garbage-collector setting (``gc_frozen``). The model strategy is also timed with a threshold
    no forecast reaches: it then sends no order, which separates the cost of the model work from
    Backtrader's cost per order.
    """
    # "trade": the bench times the networks and the orders, so every model must run
    forecaster = load_forecaster(model_dir, no_skill="trade")
    no_orders = replace(cfg.strategy, threshold=1.0)  # |next-bar log return| never reaches 1

    def model_run(strategy_cfg=cfg.strategy) -> Any:
        signals = forecaster.forecast_frame(frame)
        return run_backtest(frame, strategy_cls, strategy_cfg, signals=signals,
                            forecaster=forecaster)

    def baseline_run() -> Any:
        feed_frame = frame[["open", "high", "low", "close", "volume"]].assign(
            forecast=np.nan, regime=-1.0)
        cerebro = make_cerebro(feed_frame, cfg.strategy)
        cerebro.addstrategy(baseline_cls)
        with gc_frozen():  # the same conditions as run_backtest gives the model strategy
            return cerebro.run()[0]

    n_fills = len(model_run().fills)
    n_base_orders = baseline_run().n_orders
    model_s, model_all = median_time(model_run, reps)
    quiet_s, _ = median_time(lambda: model_run(no_orders), reps)
    base_s, base_all = median_time(baseline_run, reps)
    n = len(frame)
    return {"bars": n, "model_strategy_s": model_s, "model_strategy_bars_per_s": n / model_s,
            "model_strategy_fills": n_fills,
            "model_strategy_no_orders_s": quiet_s,
            "no_model_strategy_s": base_s, "no_model_bars_per_s": n / base_s,
            "no_model_orders": n_base_orders,
            "ratio": model_s / base_s, "ratio_no_orders": quiet_s / base_s, "target_ratio": 1.25,
            "runs_s": {"model": model_all, "no_model": base_all}}


def peak_rss_mib() -> float:
    """Peak resident memory of this process image so far, in MiB.

    On Linux this is ``VmHWM``. Not ``ru_maxrss``: Linux carries the parent's peak into a child
    across fork and exec, so a spawned child reported the peak of the (much larger) benchmark
    process instead of its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024.0 * 1024.0) if platform.system() == "Darwin" else peak / 1024.0


def _rss_child(frame: pd.DataFrame, model_dir: str, strategy_cls: type, cfg: PipelineConfig,
               queue: Any) -> None:
    forecaster = load_forecaster(model_dir, no_skill="trade")  # every model runs, as above
    signals = forecaster.forecast_frame(frame)
    run_backtest(frame, strategy_cls, cfg.strategy, signals=signals, forecaster=forecaster)
    queue.put(peak_rss_mib())


def peak_rss_backtest(frame: pd.DataFrame, model_dir: Path, strategy_cls: type,
                      cfg: PipelineConfig) -> float:
    """Peak resident memory (MiB) of a fresh process that loads models and runs the backtest."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_rss_child, args=(frame, str(model_dir), strategy_cls, cfg, queue))
    proc.start()
    mib = queue.get(timeout=600)
    proc.join()
    return mib


def _dqn_child(frame: pd.DataFrame, steps: int, reps: int, queue: Any) -> None:
    from bt_lstm.rl.speed import bench_dqn

    queue.put(bench_dqn(frame, steps=steps, reps=reps))


def dqn_in_fresh_process(frame: pd.DataFrame, steps: int, reps: int) -> dict[str, Any]:
    """``bench_dqn`` with ``DQNConfig()``'s settings, in a fresh process as ``bt-lstm dqn``
    trains: not beside this process's models, frames and Backtrader objects, whose garbage
    collection and memory would be charged to the DQN's steps."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_dqn_child, args=(frame, steps, reps, queue))
    proc.start()
    res = queue.get(timeout=1800)
    proc.join()
    return res


def load_bench_data(csv: str | None) -> tuple[pd.DataFrame, str]:
    """``csv``, else BTCUSDT 4h from $BT_LSTM_REAL_DATA or ../shared/data (beside the current
    folder or this checkout), else synthetic."""
    if csv:
        return load_ohlcv(csv), csv
    bases = [os.environ.get(REAL_DATA_ENV), str(Path.cwd().parent / "shared" / "data"),
             str(REPO.parent / "shared" / "data")]
    for base in filter(None, bases):
        path = Path(base) / "BTCUSDT_4h.csv"
        if path.is_file():
            return load_ohlcv(path), str(path)
    return make_market(n_bars=18_158, seed=1).frame, "synthetic (18158 bars)"


RERUN = [sys.executable, "-m", "bt_lstm.cli", "backtest", "--quiet"]


def rerun_seconds(workdir: Path | None = None) -> dict[str, Any]:
    """Wall time of a cached rerun of ``bt-lstm backtest`` (models already saved), run as the
    installed module in ``workdir`` (default: the current folder, whose models/ it reuses)."""
    cwd = Path.cwd() if workdir is None else workdir
    subprocess.run(RERUN, cwd=cwd, check=True, capture_output=True)  # make sure models exist
    start = time.perf_counter()
    subprocess.run(RERUN, cwd=cwd, check=True, capture_output=True)
    return {"command": "bt-lstm backtest", "cached_rerun_s": time.perf_counter() - start,
            "target_s": 8.0}


def run_bench(frame: pd.DataFrame, source: str, cfg: PipelineConfig, strategy_cls: type,
              baseline_cls: type, reps: int, train_epochs: int, out: Path, label: str = "",
              rerun: bool = True, dqn_steps: int = 0) -> dict[str, Any]:
    """Every figure of the benchmark, written to ``out`` as JSON; returns the same dict.

    ``dqn_steps`` > 0 adds the DQN figures (``bt_lstm.rl.speed.bench_dqn``) under ``dqn``.
    """
    res: dict[str, Any] = {"label": label, "data": source, "reps": reps,
                           "machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        # The models a user gets from the default config: their forecasts set how often
        # the strategy trades, and Backtrader's cost per order is part of the backtest.
        fit, _ = fit_pipeline(frame, cfg)
        fit.forecaster.save(Path(tmp), fit.model_meta)
        res["backtest"] = bench_backtest(frame, Path(tmp), strategy_cls, baseline_cls, cfg, reps)
        res["backtest_peak_rss_mib"] = peak_rss_backtest(frame, Path(tmp), strategy_cls, cfg)
    res["inference"] = bench_inference(len(cfg.features.names), cfg.windows.lookback,
                                       cfg.model.hidden_size, reps)
    prep, _, _ = prepare_windows(frame, cfg, split_bounds(len(frame), cfg.windows))
    xt, yt = prep.windows("train")
    xv, yv = prep.windows("val")
    res["training"] = bench_training(xt, yt, xv, yv, cfg, train_epochs, max(1, min(reps, 3)))
    if dqn_steps > 0:
        res["dqn"] = dqn_in_fresh_process(frame, dqn_steps, max(50, 20 * reps))
    if rerun:
        res["rerun"] = rerun_seconds()
    atomic_write_json(out, res)
    return res


def format_bench(res: dict[str, Any]) -> str:
    """The terminal table of a benchmark result."""
    bt_, tr = res["backtest"], res["training"]
    bars = bt_["bars"]
    lines = [f"data: {res['data']}  ({bt_['bars']} bars)  machine: {res['machine']['cores']} "
             f"cores, torch {res['machine']['torch']} ({res['machine']['torch_threads']} threads)",
             "", f"{'backtest':<34}{'wall s':>10}{'bars/s':>12}",
             f"{'  RegimeLSTMStrategy (batch)':<34}{bt_['model_strategy_s']:>10.2f}"
             f"{bt_['model_strategy_bars_per_s']:>12,.0f}",
             f"{'  SmaCross (no model)':<34}{bt_['no_model_strategy_s']:>10.2f}"
             f"{bt_['no_model_bars_per_s']:>12,.0f}",
             f"{'  ratio (target <= 1.25)':<34}{bt_['ratio']:>10.2f}",
             f"{'  fills: model / SMA-cross orders':<34}{bt_['model_strategy_fills']:>10}"
             f"{bt_['no_model_orders']:>12}",
             f"{'  model strategy, no orders':<34}{bt_['model_strategy_no_orders_s']:>10.2f}"
             f"{bars / bt_['model_strategy_no_orders_s']:>12,.0f}",
             f"{'  ratio without orders':<34}{bt_['ratio_no_orders']:>10.2f}",
             f"{'  peak RSS of a backtest process':<34}{res['backtest_peak_rss_mib']:>10.0f} MiB",
             "", f"{'inference':<14}{'p50 ms/window':>16}{'p99 ms':>10}{'batch windows/s':>18}"]
    for arch, r in res["inference"].items():
        lines.append(f"  {arch:<12}{r['latency_ms_median']:>16.3f}{r['latency_ms_p99']:>10.3f}"
                     f"{r['batch_windows_per_s']:>18,.0f}")
    lines += ["", f"training ({tr['arch']} h={tr['hidden_size']} L={tr['lookback']}, "
                  f"{tr['windows']} windows, batch {tr['batch_size']})",
              f"  ours: {tr['ours_s_per_epoch']:.2f} s/epoch, {tr['ours_samples_per_s']:,.0f} "
              f"samples/s", f"  bare loop: {tr['bare_s_per_epoch']:.2f} s/epoch, "
              f"{tr['bare_samples_per_s']:,.0f} samples/s",
              f"  ratio (target <= 1.3): {tr['ratio']:.2f}"]
    if "dqn" in res:
        d = res["dqn"]
        st = d["settings"]
        lines += ["", f"DQN (DQNConfig defaults: {st['envs']} envs, window {d['window']}, "
                      f"{d['threads']} thread, batch {st['batch_size']} every "
                      f"{st['train_freq']} steps, load average "
                      f"{d['load_average_before']:.1f} -> {d['load_average_after']:.1f})",
                  f"{'':<14}{'train steps/s':>14}{'per CPU s':>11}{'act p50 ms':>12}"
                  f"{'p99 ms':>9}{'batch Q obs/s':>15}  (goal: LSTM >= 500 steps/s)"]
        for qnet in ("lstm", "dense"):
            r = d[qnet]
            lines.append(f"  {qnet:<12}{r['train_env_steps_per_s']:>14,.0f}"
                         f"{r['train_env_steps_per_cpu_s']:>11,.0f}"
                         f"{r['act_latency_ms_median']:>12.3f}{r['act_latency_ms_p99']:>9.3f}"
                         f"{r['batch_q_obs_per_s']:>15,.0f}")
    if "rerun" in res:
        lines.append(f"\ncached rerun of `bt-lstm backtest`: "
                     f"{res['rerun']['cached_rerun_s']:.1f} s (target <= 8)")
    return "\n".join(lines)
