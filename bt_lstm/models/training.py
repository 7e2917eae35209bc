"""Train one network: Adam, MSE, mini-batches, gradient clipping, early stopping, seeding, device.

Legend: N windows, L lookback, F features. X is (N, L, F) float32, y is (N,) float32.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from bt_lstm.config import TrainConfig

logger = logging.getLogger(__name__)

# progress(epoch, n_epochs, train_loss, val_loss, best_val_loss)
ProgressFn = Callable[[int, int, float, float, float], None]


@dataclass
class TrainResult:
    """Best weights (by validation loss) and the per-epoch history."""

    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


def build_seeded(arch: str, n_features: int, hparams: dict, seed: int,
                 model_file: str | None = None) -> nn.Module:
    """Build a registered model with weights initialised from ``seed`` (global RNG untouched)."""
    from bt_lstm.models.nets import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, n_features, hparams, model_file)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a clear error."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is available; "
                         "use --device cpu or auto")
    return torch.device("cuda")


def configure_determinism() -> None:
    """Make CUDA training repeatable: call at start-up, before any CUDA work.

    cuBLAS needs its workspace setting before its first use; cuDNN must not pick kernels by
    benchmarking; torch's non-deterministic kernels warn. Harmless on CPU, where results are
    already repeatable for a given seed and thread count.
    """
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    # torch.use_deterministic_algorithms imports torch._inductor (and torch._dynamo with it,
    # about 2 s at every start) only to set the compiler's flag; nothing here is compiled, so
    # the eager flag is set directly, and the compiler's too once it is loaded anyway.
    eager = getattr(torch._C, "_set_deterministic_algorithms", None)
    if eager is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        eager(True, warn_only=True)


def configure_threads(threads: int) -> None:
    """Set torch's intra-op threads when asked (0 leaves torch's choice)."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


EVAL_BATCH = 4096  # no gradients: large batches make the validation pass cheap


def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    batch = max(batch, EVAL_BATCH)
    model.eval()
    total = 0.0
    with torch.no_grad():
        # Every validation row counts: the last partial batch is kept.
        for i in range(0, len(x), batch):
            pred = model(x[i:i + batch])
            total += float(((pred - y[i:i + batch]) ** 2).sum())
    return total / max(len(x), 1)


def train_model(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                y_val: np.ndarray, cfg: TrainConfig,
                progress: ProgressFn | None = None) -> TrainResult:
    """Fit ``model`` in place and load its best weights; return them with the history.

    Notes
    -----
    All randomness (shuffling, dropout) comes from ``cfg.seed`` inside a forked RNG, so the
    caller's global torch RNG is untouched and the same seed gives the same weights.
    """
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError(f"training needs windows in both parts (train={len(x_train)}, "
                         f"validation={len(x_val)})")
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        configure_determinism()
    configure_threads(cfg.threads)
    model.to(device)
    xt = torch.as_tensor(x_train, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y_train, dtype=torch.float32, device=device)
    xv = torch.as_tensor(x_val, dtype=torch.float32, device=device)
    yv = torch.as_tensor(y_val, dtype=torch.float32, device=device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        return _fit(model, xt, yt, xv, yv, cfg, gen, progress)


def _fit(model: nn.Module, xt: torch.Tensor, yt: torch.Tensor, xv: torch.Tensor,
         yv: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
         progress: ProgressFn | None) -> TrainResult:
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = TrainResult(copy.deepcopy(model.state_dict()), 0,
                       _mean_loss(model, xv, yv, cfg.batch_size))
    n = len(xt)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen).to(xt.device)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(xt[idx]), yt[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            total += loss.item() * len(idx)
        train_loss = total / n
        val_loss = _mean_loss(model, xv, yv, cfg.batch_size)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {train_loss}); "
                                     f"lower --lr")
        best.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best.best_val_loss:
            best.state_dict = copy.deepcopy(model.state_dict())
            best.best_epoch, best.best_val_loss = epoch, val_loss
        if progress is not None:
            progress(epoch, cfg.epochs, train_loss, val_loss, best.best_val_loss)
        if epoch - best.best_epoch >= cfg.patience:
            best.stopped_early = True
            break
    model.load_state_dict(best.state_dict)
    model.to("cpu")
    best.state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return best


def predict_windows(arch: str, hparams: dict, state: dict, x: np.ndarray,
                    model_file: str | None = None) -> np.ndarray:
    """Forecasts (N,) of a network rebuilt from ``arch``/``hparams`` with weights ``state``,
    for windows ``x`` (N, L, F) float32, in the model's (scaled) target units."""
    model = build_seeded(arch, x.shape[2], hparams, 0, model_file)
    model.load_state_dict(state)
    if not len(x):
        return np.empty(0)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy().astype(float)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block on one torch thread, then restore the previous count.

    Thread counts change float summation order; one thread everywhere makes results identical
    for any number of worker processes, and small models are fastest that way.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
