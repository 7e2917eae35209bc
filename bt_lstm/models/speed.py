"""Speed measurements of the networks themselves: inference latency and throughput, and training
throughput beside a bare PyTorch loop (the torch half of ``bt-lstm bench``)."""
from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from bt_lstm.config import PipelineConfig, TrainConfig
from bt_lstm.models.nets import model_hparams, registered_models
from bt_lstm.models.training import build_seeded, train_model


def median_time(fn: Callable[[], Any], reps: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def torch_info() -> dict[str, Any]:
    """What sets the speed of torch here: cores, torch version and threads, CUDA."""
    return {"cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


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
            batch_s, _ = median_time(lambda: model(batch), reps)
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

    ours_s, _ = median_time(ours, reps)
    bare_s, _ = median_time(bare, reps)
    n = len(x_train) * epochs
    return {"windows": len(x_train), "val_windows": len(x_val), "epochs": epochs,
            "batch_size": tcfg.batch_size, "arch": cfg.model.arch,
            "hidden_size": cfg.model.hidden_size, "lookback": x_train.shape[1],
            "ours_s_per_epoch": ours_s / epochs, "ours_samples_per_s": n / ours_s,
            "bare_s_per_epoch": bare_s / epochs, "bare_samples_per_s": n / bare_s,
            "ratio": ours_s / bare_s, "target_ratio": 1.3,
            "note": "ours includes the validation pass and best-weight bookkeeping each epoch"}
