"""Speed benchmarks: backtest vs a no-model strategy, inference latency, training throughput.

Every figure is a median over repetitions; the machine is recorded beside them. Timings are
measured here and written to JSON, never asserted in tests.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from bt_lstm import __version__
from bt_lstm.config import PipelineConfig, TrainConfig
from bt_lstm.models import registered_models
from bt_lstm.pipeline import model_hparams
from bt_lstm.training import build_seeded, train_model

logger = logging.getLogger(__name__)


def _median_time(fn: Callable[[], Any], reps: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def machine_info() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "bt_lstm": __version__,
            "cuda": torch.cuda.is_available()}


def bench_backtest(frame: pd.DataFrame, model_dir: Path, strategy_cls: type, baseline_cls: type,
                   cfg: PipelineConfig, reps: int) -> dict[str, Any]:
    """Wall time of the model strategy (batch forecasts + Backtrader) vs a no-model strategy.

    Both run on the same feed class, the same broker (cash, commission, slippage) and the same
    garbage-collector setting (``gc_frozen``). The model strategy is also timed with a threshold
    no forecast reaches: it then sends no order, which separates the cost of the model work from
    Backtrader's cost per order.
    """
    from dataclasses import replace

    from bt_lstm.backtest import gc_frozen, make_cerebro, run_backtest
    from bt_lstm.forecast import load_forecaster

    forecaster = load_forecaster(model_dir)
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
    model_s, model_all = _median_time(model_run, reps)
    quiet_s, _ = _median_time(lambda: model_run(no_orders), reps)
    base_s, base_all = _median_time(baseline_run, reps)
    n = len(frame)
    return {"bars": n, "model_strategy_s": model_s, "model_strategy_bars_per_s": n / model_s,
            "model_strategy_fills": n_fills,
            "model_strategy_no_orders_s": quiet_s,
            "no_model_strategy_s": base_s, "no_model_bars_per_s": n / base_s,
            "no_model_orders": n_base_orders,
            "ratio": model_s / base_s, "ratio_no_orders": quiet_s / base_s, "target_ratio": 1.5,
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
    from bt_lstm.backtest import run_backtest
    from bt_lstm.forecast import load_forecaster

    forecaster = load_forecaster(model_dir)
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


def bench_inference(n_features: int, lookback: int, hidden: int, reps: int,
                    n_batch: int = 12_000) -> dict[str, Any]:
    """Per-window latency (median, p99) and batch throughput of every registered architecture."""
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.standard_normal((n_batch, lookback, n_features), np.float32))
    one = batch[:1]  # (1, L, F)
    for arch in registered_models():
        model = build_seeded(arch, n_features, {"lookback": lookback, "hidden_size": hidden,
                                                "num_layers": 1, "dropout": 0.0},
                             seed=0).eval()
        with torch.no_grad():
            for _ in range(20):
                model(one)  # warm-up
            lat = []
            for _ in range(max(200, reps * 100)):
                start = time.perf_counter()
                model(one)
                lat.append(time.perf_counter() - start)
            batch_s, _ = _median_time(lambda: model(batch), reps)
        out[arch] = {"latency_ms_median": 1e3 * float(np.median(lat)),
                     "latency_ms_p99": 1e3 * float(np.percentile(lat, 99)),
                     "batch_windows_per_s": n_batch / batch_s, "batch_size": n_batch}
    return out


def _bare_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
               epochs: int) -> None:
    """The plainest correct PyTorch loop over the same tensors: the yardstick."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()


def bench_training(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                   y_val: np.ndarray, cfg: PipelineConfig, epochs: int,
                   reps: int) -> dict[str, Any]:
    """Samples/s and seconds per epoch of ``train_model`` vs a bare loop, same model and data."""
    tcfg = cfg.train.__class__(**{**cfg.train.to_dict(), "epochs": epochs, "patience": epochs + 1,
                                  "device": "cpu"})
    hp = model_hparams(cfg)
    n_feat = x_train.shape[2]

    def ours() -> None:
        model = build_seeded(cfg.model.arch, n_feat, hp, seed=0)
        train_model(model, x_train, y_train, x_val, y_val, tcfg)

    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)

    def bare() -> None:
        _bare_loop(build_seeded(cfg.model.arch, n_feat, hp, seed=0), xt, yt, tcfg, epochs)

    ours_s, _ = _median_time(ours, reps)
    bare_s, _ = _median_time(bare, reps)
    n = len(x_train) * epochs
    return {"windows": len(x_train), "val_windows": len(x_val), "epochs": epochs,
            "batch_size": tcfg.batch_size, "arch": cfg.model.arch,
            "hidden_size": cfg.model.hidden_size, "lookback": x_train.shape[1],
            "ours_s_per_epoch": ours_s / epochs, "ours_samples_per_s": n / ours_s,
            "bare_s_per_epoch": bare_s / epochs, "bare_samples_per_s": n / bare_s,
            "ratio": ours_s / bare_s, "target_ratio": 1.3,
            "note": "ours includes the validation pass and best-weight bookkeeping each epoch"}
