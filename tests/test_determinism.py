"""Same seed, same bits: weights, forecasts and trades in separate processes; CUDA settings."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

SCRIPT = """
import hashlib, json, sys
import numpy as np
from bt_lstm.backtest.engine import run_backtest
from bt_lstm.config import ModelConfig, PipelineConfig, StrategyConfig, TrainConfig, WindowConfig
from bt_lstm.research.pipeline import fit_pipeline
from bt_lstm.data.synthetic import make_market
from strategies.lstm_strategy import RegimeLSTMStrategy

seed = int(sys.argv[1])
cfg = PipelineConfig(windows=WindowConfig(lookback=8), model=ModelConfig(hidden_size=4),
                     train=TrainConfig(epochs=2, patience=2, batch_size=128, seed=seed,
                                       min_regime_windows=20, min_val_windows=5, device="cpu"),
                     strategy=StrategyConfig(no_skill="trade"))  # tiny models: no skill
frame = make_market(n_bars=1200, seed=3).frame
fit, bounds = fit_pipeline(frame, cfg)
weights = hashlib.sha256()
for name, model in sorted(fit.forecaster.models.items()):
    for key, value in sorted(model.state_dict().items()):
        weights.update(key.encode()); weights.update(value.numpy().tobytes())
signals = fit.forecaster.forecast_frame(frame)
res = run_backtest(frame.iloc[bounds.test[0]:], RegimeLSTMStrategy, cfg.strategy,
                   signals=signals.iloc[bounds.test[0]:])
print(json.dumps({"weights": weights.hexdigest(),
                  "forecasts": hashlib.sha256(signals["forecast"].to_numpy().tobytes()).hexdigest(),
                  "fills": res.fills[["bar", "size", "price", "commission"]].to_numpy().tolist(),
                  "final_value": res.final_value}))
"""


def run_in_fresh_process(seed: int) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(seed)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_same_seed_is_bit_identical_across_processes_and_another_seed_is_not():
    a, b = run_in_fresh_process(7), run_in_fresh_process(7)
    assert a == b  # weights, forecasts, every fill and the final value, bit for bit
    assert len(a["fills"]) > 0
    c = run_in_fresh_process(8)
    assert c["weights"] != a["weights"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_training_applies_the_determinism_settings(market, tiny_cfg):
    from dataclasses import replace

    from bt_lstm.research.pipeline import fit_pipeline

    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, device="cuda"))
    a, _ = fit_pipeline(market.frame, cfg)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled()
    b, _ = fit_pipeline(market.frame, cfg)
    for name, model in a.forecaster.models.items():
        for key, value in model.state_dict().items():
            assert torch.equal(value, b.forecaster.models[name].state_dict()[key])
