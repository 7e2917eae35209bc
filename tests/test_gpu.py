"""CUDA training: skipped where no GPU is present."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bt_lstm.config import replace
from bt_lstm.models.forecast import load_forecaster
from bt_lstm.research.pipeline import fit_pipeline

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]


def test_cuda_training_saves_cpu_loadable_models(market, tiny_cfg, tmp_path):
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, device="cuda"))
    result, _ = fit_pipeline(market.frame, cfg)
    result.forecaster.save(tmp_path / "b", result.model_meta)
    loaded = load_forecaster(tmp_path / "b")
    a = result.forecaster.forecast_frame(market.frame)["forecast"].to_numpy()
    b = loaded.forecast_frame(market.frame)["forecast"].to_numpy()
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a[-100:]).all()
