"""Shared fixtures: a seeded synthetic market, tiny configs, one fitted pipeline per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bt_lstm.config import ModelConfig, PipelineConfig, TrainConfig, WindowConfig
from bt_lstm.data.synthetic import make_market
from bt_lstm.research.pipeline import fit_pipeline

# Small models are faster on one thread, and the suite runs on 2 cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--lookback", "8", "--hidden-size", "4", "--epochs", "2", "--patience", "2",
              "--min-regime-windows", "20", "--quiet"]


def real_data_dir() -> Path | None:
    """../shared/data beside the checkout, or $BT_LSTM_REAL_DATA; None where absent."""
    env = os.environ.get("BT_LSTM_REAL_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "BTCUSDT_4h.csv").is_file():
            return cand
    return None


@pytest.fixture(scope="session")
def tiny_cfg() -> PipelineConfig:
    return PipelineConfig(
        windows=WindowConfig(lookback=8),
        model=ModelConfig(hidden_size=4),
        train=TrainConfig(epochs=2, patience=2, batch_size=128, min_regime_windows=20,
                          min_val_windows=5, device="cpu"))


@pytest.fixture(scope="session")
def market():
    return make_market(n_bars=1200, seed=3)


@pytest.fixture(scope="session")
def fitted(market, tiny_cfg):
    result, bounds = fit_pipeline(market.frame, tiny_cfg)
    return result, bounds


@pytest.fixture()
def market_csv(market, tmp_path) -> Path:
    path = tmp_path / "candles.csv"
    frame = market.frame.copy()
    frame.index = frame.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index_label="timestamp")
    return path


REDIS_URL = os.environ.get("BT_LSTM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("BT_LSTM_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


def service_missing(why: str) -> None:
    """Skip with ``why``; with BT_LSTM_REQUIRE_SERVICES=1 (as .ci/run sets) fail instead."""
    if os.environ.get("BT_LSTM_REQUIRE_SERVICES") == "1":
        pytest.fail(why + " (BT_LSTM_REQUIRE_SERVICES=1: services are required here)")
    pytest.skip(why)
