from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bt_lstm.config import WindowConfig
from bt_lstm.research.pipeline import fit_pipeline
from bt_lstm.signals.windows import (
    apply_scaler,
    fit_scaler,
    gather_windows,
    make_target,
    split_bounds,
    valid_window_ends,
    window_view,
)


def test_target_is_next_bar_log_return():
    close = pd.Series([100.0, 110.0, 99.0])
    target = make_target(close)
    assert target.iloc[0] == pytest.approx(np.log(1.1))
    assert target.iloc[1] == pytest.approx(np.log(0.9))
    assert np.isnan(target.iloc[2])


def test_windows_keep_time_order_and_shape():
    values = np.arange(20, dtype=np.float32).reshape(10, 2)  # (T=10, F=2)
    view = window_view(values, 4)
    assert view.shape == (7, 4, 2)
    assert np.shares_memory(view, values)  # a strided view, no copy
    x = gather_windows(values, np.array([3, 9]), 4)  # (N=2, L=4, F=2)
    np.testing.assert_array_equal(x[0], values[0:4])
    np.testing.assert_array_equal(x[1], values[6:10])


def test_split_has_purge_gaps_and_order():
    cfg = WindowConfig(train_frac=0.7, val_frac=0.15, gap_bars=3, horizon=2)
    b = split_bounds(1000, cfg)
    assert b.train[0] == 0 and b.train[1] <= b.val[0] - 3
    assert b.val[1] <= b.test[0] - 3 and b.test[1] == 1000
    assert b.val[0] < b.val[1] < b.test[0]


def test_split_too_small_is_an_error():
    with pytest.raises(ValueError, match="too few"):
        split_bounds(5, WindowConfig())


def test_scaler_uses_given_rows_only():
    x = np.array([[1.0, 10.0], [3.0, 10.0], [np.nan, 1.0], [100.0, 100.0]])
    p = fit_scaler(x[:3], np.array([0.01, -0.01, 0.02]))
    assert p.mean == (2.0, 10.0)
    assert p.scale == (1.0, 1.0)  # a constant column gets scale 1, not a division by zero
    np.testing.assert_allclose(apply_scaler(x[:2], p), [[-1, 0], [1, 0]])


def test_valid_window_ends_requires_full_history_and_known_regime():
    feats = np.ones((6, 1))
    feats[1] = np.nan
    regimes = np.array([1, 1, 1, 1, 1, -1])
    assert valid_window_ends(feats, regimes, 2).tolist() == [False, False, False, True, True,
                                                             False]


def test_scaler_and_models_ignore_data_after_training(market, tiny_cfg):
    """Changing validation/test bars leaves scaler and regime classifier unchanged."""
    fit_a, bounds = fit_pipeline(market.frame, tiny_cfg)
    changed = market.frame.copy()
    cut = bounds.val[0]
    changed.iloc[cut:, :4] *= 1.5
    fit_b, _ = fit_pipeline(changed, tiny_cfg)
    assert fit_a.forecaster.scaler == fit_b.forecaster.scaler
    assert fit_a.forecaster.regime_params == fit_b.forecaster.regime_params
