"""bt-lstm inside freqtrade (bt_lstm.freqai): the model bundle on a FreqAI-shaped frame (save,
fresh-process load, tampering, the skill guard, a user's architecture file), and real
``freqtrade backtesting`` runs with BtLstmRegressor, offline against the local exchange
stand-in. The freqtrade runs skip without freqtrade, and fail under BT_LSTM_REQUIRE_SERVICES=1."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, service_missing

from bt_lstm.config import FeatureConfig
from bt_lstm.data.synthetic import make_market
from bt_lstm.freqai.bundle import load_bundle, manifest_path
from bt_lstm.freqai.fitting import fit_bundle
from bt_lstm.freqai.params import parse_params
from bt_lstm.models.artifacts import ArtifactError
from bt_lstm.signals.features import compute_features

LABEL = "&-log_ret_next"
TINY = {"lookback": 8, "model": {"hidden_size": 4},
        "train": {"epochs": 2, "patience": 2, "batch_size": 128, "device": "cpu",
                  "min_regime_windows": 20, "min_val_windows": 5},
        "regimes": {"method": "rule", "trend_bars": 20}, "no_skill": "trade"}

SIMPLE_LSTM = '''
import torch
from torch import nn
from bt_lstm.models import register_model


@register_model("SimpleLSTMModel")
class SimpleLSTMModel(nn.Module):
    """The LSTM of FreqAI's user examples, as a file outside any package."""

    def __init__(self, n_features, lookback=None, hidden_size=8, num_layers=1, dropout=0.0):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden_size, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, 1)

    def forward(self, x):
        out, _ = self.lstm(x)  # (B, L, H)
        return self.fc(torch.tanh(out[:, -1, :]))[:, 0]  # (B,)
'''


def freqai_frame(n_bars: int = 900, seed: int = 3) -> pd.DataFrame:
    """What FreqAI hands a model: candles with ``%-`` features and a ``&-`` label, RangeIndex."""
    candles = make_market(n_bars=n_bars, seed=seed).frame
    feats = compute_features(candles, FeatureConfig())
    frame = pd.DataFrame({"date": candles.index.tz_localize("UTC"),
                          "close": candles["close"].to_numpy()})
    for name in feats.columns:
        frame[f"%-bt_{name}"] = feats[name].to_numpy()
    frame[LABEL] = np.log(candles["close"].shift(-1) / candles["close"]).to_numpy()
    return frame


def feature_names(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("%")]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return freqai_frame()


def predict_in_fresh_process(folder: Path, stem: str, frame: pd.DataFrame,
                             tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load the bundle in a new interpreter, from another working directory, and predict."""
    data, out = tmp / "frame.pkl", tmp / "out.npz"
    frame.to_pickle(data)
    code = ("import numpy as np, pandas as pd\n"
            "from bt_lstm.freqai.bundle import load_bundle\n"
            f"b = load_bundle({str(folder)!r}, {stem!r})\n"
            f"p, d = b.predict(pd.read_pickle({str(data)!r}))\n"
            f"np.savez({str(out)!r}, p=p, d=d)\n")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-c", code], cwd=elsewhere, check=True)
    got = np.load(out)
    return got["p"], got["d"]


def test_bundle_trains_saves_and_predicts_the_same_in_a_fresh_process(frame, tmp_path):
    bundle = fit_bundle(frame, feature_names(frame), LABEL, 700, parse_params(TINY))
    pred, do = bundle.predict(frame)
    assert do[:7].sum() == 0 and do.sum() > 600  # the first L-1 rows have no full window
    assert np.count_nonzero(pred) == do.sum()
    bundle.save(tmp_path, "cb_btc_1")
    meta = json.loads(manifest_path(tmp_path, "cb_btc_1").read_text())
    for key in ("features", "lookback", "arch", "hparams", "scaler", "regimes", "routes",
                "skill", "versions", "nets", "schema_version"):
        assert key in meta, key
    assert set(meta["nets"]) == set(bundle.states) and "pooled" in meta["nets"]
    for entry in meta["nets"].values():  # every network: JSON with a sha256, weights only
        net = json.loads((tmp_path / entry["file"]).read_text())
        state = torch.load(tmp_path / net["weights_file"], weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    p2, d2 = predict_in_fresh_process(tmp_path, "cb_btc_1", frame, tmp_path)
    np.testing.assert_allclose(p2, pred, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(d2, do)


def test_user_architecture_file_outside_any_package_round_trips(frame, tmp_path):
    user = tmp_path / "user_data" / "freqaimodels"
    user.mkdir(parents=True)
    (user / "simple_lstm.py").write_text(SIMPLE_LSTM)
    params = parse_params(dict(TINY, model={"arch": "SimpleLSTMModel", "hidden_size": 4,
                                            "model_file": "freqaimodels/simple_lstm.py"}),
                          base_dir=tmp_path / "user_data")
    bundle = fit_bundle(frame, feature_names(frame), LABEL, 700, params)
    pred, do = bundle.predict(frame)
    bundle.save(tmp_path / "models", "cb_btc_2")
    meta = json.loads(manifest_path(tmp_path / "models", "cb_btc_2").read_text())
    assert meta["arch"] == "SimpleLSTMModel"
    assert meta["model_file"] == str((user / "simple_lstm.py").resolve())
    p2, d2 = predict_in_fresh_process(tmp_path / "models", "cb_btc_2", frame, tmp_path)
    np.testing.assert_allclose(p2, pred, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(d2, do)


def test_live_tail_of_context_bars_forecasts_the_last_candle_as_the_full_frame(frame):
    # live, FreqAI hands predict only the last conv_width candles; BtLstmRegressor raises
    # conv_width to context_bars, which must be enough for the same last forecast
    params = parse_params(TINY)
    bundle = fit_bundle(frame, feature_names(frame), LABEL, 700, params)
    full_pred, full_do = bundle.predict(frame)
    for end in (750, 820, len(frame)):
        tail = frame.iloc[end - params.context_bars():end]
        pred, do = bundle.predict(tail)
        assert do[-1] == full_do[end - 1] == 1
        assert abs(pred[-1] - full_pred[end - 1]) < 1e-9
    # one candle fewer and the last row's regime is still unknown: context_bars is the minimum
    assert bundle.regime_labels(frame.iloc[820 - params.context_bars():820])[-1] >= 0
    assert bundle.regime_labels(frame.iloc[820 - params.context_bars() + 1:820])[-1] == -1


@pytest.fixture()
def saved(frame, tmp_path) -> Path:
    fit_bundle(frame, feature_names(frame), LABEL, 700,
               parse_params(dict(TINY, regimes=None))).save(tmp_path, "m")
    return tmp_path


def test_tampered_weights_are_refused_in_one_line(saved):
    pt = saved / "m_bt_lstm_pooled.pt"
    data = bytearray(pt.read_bytes())
    data[-10] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum does not match") as info:
        load_bundle(saved, "m")
    assert "\n" not in str(info.value)


def test_edited_network_json_and_other_features_are_refused(saved, frame):
    with pytest.raises(ArtifactError, match="trained on other features"):
        load_bundle(saved, "m", feature_names(frame)[::-1])
    net = saved / "m_bt_lstm_pooled.json"
    meta = json.loads(net.read_text())
    net.write_text(json.dumps(dict(meta, hparams=dict(meta["hparams"], hidden_size=8))))
    with pytest.raises(ArtifactError, match="changed since the model was saved"):
        load_bundle(saved, "m")


def test_skill_guard_predicts_zero_and_clears_do_predict(frame):
    # skill_p this small: no network can show validated skill, so every route is flat
    params = parse_params(dict(TINY, no_skill="flat", skill_p=1e-12))
    bundle = fit_bundle(frame, feature_names(frame), LABEL, 700, params)
    assert set(bundle.meta["routes"].values()) == {"flat:no_skill"}
    pred, do = bundle.predict(frame)
    assert not pred.any() and not do.any()


def test_skill_guard_judges_a_k_candle_label_with_the_long_run_variance(frame, monkeypatch):
    import bt_lstm.freqai.fitting as fitting

    real, horizons = fitting.skill_record, []

    def spy(*args, **kwargs):
        horizons.append(args[6] if len(args) > 6 else kwargs.get("horizon", 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(fitting, "skill_record", spy)
    one = fit_bundle(frame, feature_names(frame), LABEL, 700, parse_params(TINY))
    six = fit_bundle(frame, feature_names(frame), LABEL, 700, parse_params(TINY), horizon=6)
    n = len(one.meta["skill"])
    assert horizons == [1] * n + [6] * n  # every network's guard, as train_one's
    for name, rec in six.meta["skill"].items():  # the same networks, a wider DM variance
        assert rec["val_mse"] == pytest.approx(one.meta["skill"][name]["val_mse"])
    assert any(rec["dm_p"] != one.meta["skill"][k]["dm_p"] for k, rec in six.meta["skill"].items())


def test_unknown_architecture_and_keys_are_one_line():
    with pytest.raises(ValueError, match="unknown architecture 'lsmt'.*did you mean 'lstm'"):
        parse_params({"model": {"arch": "lsmt"}})
    with pytest.raises(ValueError, match="did you mean 'lookback'"):
        parse_params({"lokback": 8})
    with pytest.raises(ValueError, match=r"model_training_parameters\.train: .*'epochs'"):
        parse_params({"train": {"epoch": 2}})


def test_example_config_points_ccxt_at_the_local_stand_in():
    from bt_lstm.freqai.exchange import example_ccxt_config

    config = json.loads((REPO / "examples/freqtrade/user_data/config.json").read_text())
    assert config["exchange"]["ccxt_config"] == example_ccxt_config(18765)
    params = config["freqai"]["model_training_parameters"]
    assert parse_params(params).no_skill == "flat"  # the example keeps the skill guard on


def test_importing_freqtrade_outside_the_adapter_breaks_its_contract(tmp_path):
    from test_architecture import broken_contracts

    assert "freqtrade (and its datasieve) only under bt_lstm.freqai" in broken_contracts(
        tmp_path, "bt_lstm/models/nets.py", "import freqtrade")


# -- real freqtrade runs ------------------------------------------------------------------------
EXAMPLE = REPO / "examples" / "freqtrade" / "user_data"
TIMERANGE = "20240101-20240301"


def need_freqtrade() -> None:
    if importlib.util.find_spec("freqtrade") is None:
        service_missing("freqtrade is not installed (pip install -e '.[freqtrade]')")


@pytest.fixture(scope="module")
def userdir(tmp_path_factory):
    """The example user_data with tiny training settings, BTC 4h candles (the bundled
    snapshot) in freqtrade's format, and the exchange stand-in serving its markets."""
    need_freqtrade()
    from bt_lstm.data.snapshot import find_snapshot, load_snapshot
    from bt_lstm.freqai.convert import to_freqtrade_frame, write_freqtrade_candles
    from bt_lstm.freqai.exchange import example_ccxt_config, start_exchange

    ud = tmp_path_factory.mktemp("ft") / "user_data"
    shutil.copytree(EXAMPLE / "strategies", ud / "strategies")
    candles = load_snapshot(find_snapshot("BTCUSDT", "4h"))
    write_freqtrade_candles(to_freqtrade_frame(candles, "2023-10-01", "2024-03-02"),
                            ud / "data" / "binance", "BTC/USDT", "4h")
    exchange = start_exchange(candles.loc["2023-10-01":"2024-03-02"], "BTCUSDT", "4h")
    config = json.loads((EXAMPLE / "config.json").read_text())
    config["exchange"]["ccxt_config"] = example_ccxt_config(exchange.server.server_address[1])
    config["freqai"].update(train_period_days=60, backtest_period_days=30)
    config["freqai"]["model_training_parameters"] = dict(TINY, no_skill="flat")
    (ud / "config.json").write_text(json.dumps(config))
    yield ud
    exchange.close()


def backtest(ud: Path, config: Path | None = None) -> tuple[int, str, str]:
    """Run ``freqtrade backtesting``; its exit code, its log file (unwrapped lines) and
    its console output."""
    from bt_lstm.freqai import freqaimodel_path

    logfile = ud / "logs" / f"run{len(list((ud / 'logs').glob('run*.log')))}.log"
    logfile.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "freqtrade", "backtesting", "--config",
           str(config or ud / "config.json"), "--userdir", str(ud), "--strategy",
           "BtLstmStrategy", "--freqaimodel", "BtLstmRegressor", "--freqaimodel-path",
           str(freqaimodel_path()), "--timerange", TIMERANGE, "--cache", "none",
           "--logfile", str(logfile)]
    # freqtrade leaves logging unconfigured (no --logfile) when it sees PYTEST_VERSION
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ud.parent,
                         env=env)
    log = logfile.read_text() if logfile.is_file() else ""
    logfile.with_suffix(".console").write_text(run.stdout + run.stderr)  # for a failure's reader
    return run.returncode, log, run.stdout + run.stderr


def predictions(ud: Path) -> dict[str, pd.DataFrame]:
    folder = ud / "models" / "bt-lstm-example" / "backtesting_predictions"
    return {p.name: pd.read_feather(p) for p in sorted(folder.glob("*.feather"))}


def total_trades(ud: Path) -> int:
    from freqtrade.data.btanalysis import load_backtest_stats

    stats = load_backtest_stats(ud / "backtest_results")
    return int(stats["strategy"]["BtLstmStrategy"]["total_trades"])


@pytest.mark.slow
def test_freqtrade_backtesting_trains_saves_then_reuses_the_models(userdir):
    rc, log, console = backtest(userdir)
    assert rc == 0, console[-3000:]
    n_trains = log.count("Starting training BTC/USDT")
    assert n_trains == 2 and log.count("bt-lstm: saved") == 2, console[:3000]
    routes = [line for line in log.splitlines() if "bt_lstm.freqai.fitting" in line and "→" in line]
    trades = total_trades(userdir)
    # trades, or, when no network has skill, every route says so
    assert trades > 0 or (routes and all("no validated skill" in r and r.endswith("→ flat")
                                         for r in routes)), (trades, routes)
    before = predictions(userdir)
    assert len(before) == 2
    # freqtrade reuses saved predictions first; without them it must load our model files
    shutil.rmtree(userdir / "models" / "bt-lstm-example" / "backtesting_predictions")
    rc, log2, console = backtest(userdir)
    assert rc == 0, console[-3000:]
    assert "Starting training" not in log2
    assert log2.count("Found model at") == 2 and log2.count("instead of retraining") == 2
    after = predictions(userdir)
    for name, frame in before.items():
        np.testing.assert_allclose(after[name][LABEL], frame[LABEL], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(after[name]["do_predict"], frame["do_predict"])
    assert total_trades(userdir) == trades


@pytest.mark.slow
def test_freqtrade_refuses_a_tampered_model_and_an_unknown_architecture(userdir, tmp_path):
    if not list((userdir / "models").glob("bt-lstm-example/sub-train-*/*_bt_lstm_pooled.pt")):
        assert backtest(userdir)[0] == 0
    pt = sorted((userdir / "models").glob("bt-lstm-example/sub-train-*/*_bt_lstm_pooled.pt"))[0]
    data = bytearray(pt.read_bytes())
    data[-10] ^= 0xFF
    pt.write_bytes(bytes(data))
    shutil.rmtree(userdir / "models" / "bt-lstm-example" / "backtesting_predictions",
                  ignore_errors=True)
    rc, log, console = backtest(userdir)
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert rc == 2 and "Traceback" not in log + console
    assert len(errors) == 1 and "checksum does not match" in errors[0], errors
    assert "to retrain" in errors[0] and "--retrain" not in errors[0]
    config = json.loads((userdir / "config.json").read_text())
    config["freqai"]["model_training_parameters"]["model"] = {"arch": "lsmt"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(config))
    rc, log, console = backtest(userdir, config=bad)
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert rc == 2 and "Traceback" not in log + console
    assert len(errors) == 1 and "unknown architecture 'lsmt'" in errors[0], errors
