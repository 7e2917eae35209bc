"""Architectures: the registry, a user's own file, save/load round trips, temporal learning."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, TINY_FLAGS

from bt_lstm.config import TrainConfig
from bt_lstm.models.artifacts import ArtifactError, load_model, save_model
from bt_lstm.models.forecast import load_forecaster
from bt_lstm.models.nets import build_model, registered_models
from bt_lstm.models.training import build_seeded, train_model
from runners import backtest as backtest_runner

HP = {"lookback": 6, "hidden_size": 4, "num_layers": 1, "dropout": 0.0}
LOAD_AND_PREDICT = """
import sys, numpy as np, torch
from bt_lstm.models.artifacts import load_model
model, _ = load_model(__import__("pathlib").Path(sys.argv[1]), sys.argv[2])
x = torch.from_numpy(np.load(sys.argv[3]))
with torch.no_grad():
    np.save(sys.argv[4], model(x).numpy())
"""


@pytest.mark.parametrize("arch", ["lstm", "gru", "mlp", "stacked_lstm"])
def test_every_architecture_trains_saves_and_loads_in_a_fresh_process(arch, tmp_path):
    assert arch in registered_models()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 6, 3)).astype(np.float32)  # (N, L, F)
    y = rng.standard_normal(40).astype(np.float32)
    model = build_seeded(arch, 3, HP, seed=0)
    train_model(model, x[:30], y[:30], x[30:], y[30:],
                TrainConfig(epochs=1, patience=1, batch_size=8, device="cpu"))
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    assert expected.shape == (40,)
    save_model(model, tmp_path, "m", {"arch": arch, "hparams": HP, "n_features": 3})
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(tmp_path), "m",
                    str(tmp_path / "x.npy"), str(tmp_path / "out.npy")],
                   cwd=tmp_path, check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    loaded, meta = load_model(tmp_path, "m")
    assert meta["arch"] == arch
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters()))


def test_stacked_lstm_is_the_dqn_design():
    m = build_model("stacked_lstm", 7, {"lookback": 10, "hidden_size": 32, "num_layers": 1,
                                        "dropout": 0.2})
    assert (m.lstm1.input_size, m.lstm1.hidden_size) == (7, 64)
    assert (m.lstm2.input_size, m.lstm2.hidden_size) == (64, 32)
    assert (m.dense.in_features, m.dense.out_features, m.out.in_features) == (32, 64, 64)
    assert m.drop.p == 0.2
    with pytest.raises(ValueError, match="fixed two-LSTM"):
        build_model("stacked_lstm", 7, {"lookback": 10, "hidden_size": 32, "num_layers": 3,
                                        "dropout": 0.2})


def test_unknown_architecture_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'lstm'"):
        build_model("lstn", 3, HP)


USER_MODEL = '''
import torch
from torch import nn

from bt_lstm.models import register_model


@register_model("AttnLSTM")
class AttnLSTM(nn.Module):
    """LSTM with attention pooling over time steps."""

    def __init__(self, n_features, lookback, hidden_size=32, num_layers=1, dropout=0.0):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden_size, num_layers=num_layers, batch_first=True)
        self.score = nn.Linear(hidden_size, 1)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x):
        seq, _ = self.lstm(x)                          # (B, L, H)
        w = torch.softmax(self.score(seq), dim=1)      # (B, L, 1)
        return self.head((w * seq).sum(dim=1))[:, 0]   # (B,)
'''

FRESH_FORECAST = """
import sys, pandas as pd
from bt_lstm.data.candles import load_ohlcv
from bt_lstm.models.forecast import load_forecaster
fc = load_forecaster(sys.argv[1])
fc.forecast_frame(load_ohlcv(sys.argv[2]))["forecast"].to_csv(sys.argv[3])
"""


def test_user_architecture_file_round_trip(market_csv, tmp_path, capsys):
    user_dir = tmp_path / "my_models"
    user_dir.mkdir()
    model_file = user_dir / "attn_lstm.py"
    model_file.write_text(textwrap.dedent(USER_MODEL))
    models = tmp_path / "models"
    rc = backtest_runner.main(["--csv", str(market_csv), *TINY_FLAGS, "--no-tearsheet",
                               "--model-file", str(model_file), "--model", "AttnLSTM",
                               "--models-dir", str(models),
                               "--reports-dir", str(tmp_path / "reports")])
    assert rc == 0
    bundle = models / "candles_4h"
    meta = json.loads(next(bundle.glob("regime_*.json")).read_text())
    assert meta["arch"] == "AttnLSTM" and meta["model_file"] == str(model_file.resolve())
    assert len(meta["model_file_sha256"]) == 64
    expected = load_forecaster(bundle).forecast_frame(
        __import__("bt_lstm.data.candles", fromlist=["x"]).load_ohlcv(market_csv))["forecast"]
    # a fresh process, started from another folder, rebuilds the user's model from the bundle
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "fresh.csv"
    subprocess.run([sys.executable, "-c", FRESH_FORECAST, str(bundle), str(market_csv), str(out)],
                   cwd=elsewhere, check=True, capture_output=True)
    fresh = pd.read_csv(out, index_col=0)["forecast"].to_numpy()
    np.testing.assert_array_equal(fresh, expected.to_numpy())
    # the backtest runner reuses it from another working directory too
    res = subprocess.run([sys.executable, str(REPO / "runners" / "backtest.py"), "--csv",
                          str(market_csv), *TINY_FLAGS, "--no-tearsheet", "--model-file",
                          str(model_file), "--model", "AttnLSTM", "--models-dir", str(models),
                          "--reports-dir", str(tmp_path / "r2")], cwd=elsewhere,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "(reused)" in res.stdout
    # and the evaluate runner scores it, again in a fresh process from another folder
    res = subprocess.run([sys.executable, str(REPO / "runners" / "evaluate.py"), "--csv",
                          str(market_csv), *TINY_FLAGS, "--model-file", str(model_file),
                          "--model", "AttnLSTM", "--models-dir", str(models),
                          "--reports-dir", str(tmp_path / "r3")], cwd=elsewhere,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "r3" / "evaluate_candles_4h" / "latest"
    scored = json.loads((out / "evaluation.json").read_text())
    assert scored["models"]["regime_model"]["overall"]["n"] > 0
    evaluated = pd.read_csv(out / "forecasts.csv",
                            index_col=0, parse_dates=True)
    np.testing.assert_allclose(evaluated["regime_model"],
                               expected.reindex(evaluated.index).to_numpy(), rtol=1e-12)
    # a changed file is refused with a clear error; so is a missing one
    model_file.write_text(model_file.read_text() + "\n# edited\n")
    with pytest.raises(ArtifactError, match="changed since the model was trained"):
        load_forecaster(bundle)
    model_file.unlink()
    with pytest.raises(ArtifactError, match="which is missing"):
        load_forecaster(bundle)


def test_bad_model_file_is_one_clear_error(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    for argv, match in [(["--model-file", str(broken), "--model", "X"], "failed to import"),
                        (["--model-file", str(tmp_path / "none.py"), "--model", "X"],
                         "no such file"),
                        (["--model", "lstn"], "did you mean 'lstm'")]:
        assert backtest_runner.main([*argv, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err


def test_flat_windows_reshape_keeps_time_order():
    flat = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)  # (N, L)
    seq = flat.reshape(5, 7, 1)  # (N, L, 1)
    for n in range(5):
        for t in range(7):
            assert seq[n, t, 0] == flat[n, t]


def _r2_on_order_task(shuffle: bool) -> float:
    rng = np.random.default_rng(0)
    L, k, j, n = 8, 1, 4, 3000
    flat = rng.standard_normal((n, L)).astype(np.float32)  # (N, L)
    y = flat[:, L - 1 - k] - flat[:, L - 1 - j]  # depends on where each value sits in time
    if shuffle:  # each window's time steps in its own random order: the order is lost
        flat = np.take_along_axis(flat, np.argsort(rng.random((n, L)), axis=1), axis=1)
    x = flat.reshape(n, L, 1)  # (N, L, 1)
    model = build_seeded("lstm", 1, {"lookback": L, "hidden_size": 16, "num_layers": 1,
                                     "dropout": 0.0}, seed=0)
    cfg = TrainConfig(epochs=40, patience=40, batch_size=64, lr=0.01, seed=0, device="cpu")
    train_model(model, x[:2000], y[:2000], x[2000:2500], y[2000:2500], cfg)
    with torch.no_grad():
        pred = model(torch.from_numpy(x[2500:])).numpy()
    yt = y[2500:]
    return float(1 - ((pred - yt) ** 2).sum() / ((yt - yt.mean()) ** 2).sum())


def test_lstm_learns_time_order_and_fails_without_it():
    assert _r2_on_order_task(shuffle=False) > 0.9
    assert _r2_on_order_task(shuffle=True) < 0.3
