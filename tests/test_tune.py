"""`tune`: the objective never reads the test part, one seeded worker reproduces, the study
folder round-trips into the backtest, storages (journal, PostgreSQL) keep every trial, and
user mistakes are one line with exit code 2. Tiny spaces and nets: seconds per test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY_FLAGS

from bt_lstm.config import StrategyConfig
from bt_lstm.research.search_space import DEFAULT_SPACE, check_space
from bt_lstm.research.selection import choose_threshold, rule_returns
from runners import tune as tune_runner

SPACE = {"lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
         "hidden_size": {"type": "categorical", "choices": [4, 8]}}
PG_URL = os.environ.get("BT_LSTM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# the driver bt-lstm installs (psycopg 3), for the test's own connections
PG_DRIVER_URL = "postgresql+psycopg://" + PG_URL.split("://", 1)[1]


@pytest.fixture()
def space_file(tmp_path) -> Path:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    return path


def _tune(csv: Path, space: Path, reports: Path, *extra: str) -> tuple[Path, pd.DataFrame]:
    rc = tune_runner.main(["--csv", str(csv), *TINY_FLAGS, "--space", str(space),
                           "--reports-dir", str(reports), *extra])
    assert rc == 0
    (folder,) = list(reports.glob("tune_*"))
    return folder, pd.read_csv(folder / "trials.csv")


def _study_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"  # unique: parallel and earlier runs never collide


def test_default_space_is_valid_and_bad_spaces_are_explained():
    assert check_space(DEFAULT_SPACE) == DEFAULT_SPACE
    for bad, words in [({"lrr": {"type": "float", "low": 0.1, "high": 0.2}}, "did you mean 'lr'"),
                       ({"lr": {"type": "float", "low": 0.2, "high": 0.1}}, "low"),
                       ({"hidden_size": {"type": "float", "low": 2, "high": 8}}, "integer"),
                       ({"dropout": {"type": "float", "low": 0.0, "high": 1.5}}, "dropout=1.5"),
                       ({"lr": {"type": "uniform"}}, "type"), ([], "non-empty")]:
        with pytest.raises(ValueError, match="space") as info:
            check_space(bad)
        assert words in str(info.value)


def test_threshold_is_chosen_at_or_above_the_floor():
    idx = pd.date_range("2024-01-01", periods=400, freq="4h")
    rng = np.random.default_rng(0)
    realised = rng.normal(0, 0.01, 400)
    forecast = realised * 0.5 + rng.normal(0, 0.005, 400)  # informative
    choice = choose_threshold(forecast, realised, idx, StrategyConfig(), floor=0.003)
    assert choice.threshold >= 0.003 and min(choice.candidates) == 0.003
    assert choice.sharpe == max(choice.candidates.values())
    # flat below the threshold: no position, no cost
    assert not rule_returns(np.zeros(5), realised[:5], 0.003, StrategyConfig()).any()


@pytest.mark.parametrize("args, words", [
    (["--space", "{missing}"], "nope.json: no such file"),
    (["--space", "{bad}"], "unknown parameter 'lrr'"),
    (["--storage", "redis://localhost/0"], "unknown storage URL"),
    (["--storage", "sqlite:///x.db"], "SQLite is not supported"),
    (["--storage", "postgresql://postgres@127.0.0.1:1/test"], "cannot open the database"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, args, words):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lrr": SPACE["lr"]}))
    args = [a.format(missing=tmp_path / "nope.json", bad=bad) for a in args]
    res = subprocess.run([sys.executable, str(REPO / "runners" / "tune.py"), *TINY_FLAGS,
                          "--trials", "1", "--reports-dir", str(tmp_path / "r"), *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], res.stderr


def test_one_seeded_worker_reproduces_trials_and_best_config(market_csv, space_file, tmp_path):
    a, ta = _tune(market_csv, space_file, tmp_path / "a", "--trials", "5")
    b, tb = _tune(market_csv, space_file, tmp_path / "b", "--trials", "5")
    cols = ["regime", "number", "state", "value", "param_lr", "param_hidden_size", "threshold"]
    pd.testing.assert_frame_equal(ta[cols], tb[cols])
    assert (a / "best_config.json").read_text() == (b / "best_config.json").read_text()
    study = json.loads((a / "study.json").read_text())
    # one study per network: the pooled one first, then every regime with a network of its own
    keys = study["study_order"]
    assert keys[0] == "pooled" and len(keys) >= 2 and list(ta["regime"].unique()) == keys
    assert sorted(keys) == sorted(study["studies"])
    assert set(keys[1:]) <= {"bearish", "sideways", "bullish"}
    assert sorted(keys[1:] + study["pooled_for"]) == ["bearish", "bullish", "sideways"]
    for key, one in study["studies"].items():
        assert one["study"] == f"{study['study']}-{key}" and one["n_trials"] == 5
        assert sorted(ta.loc[ta["regime"] == key, "number"]) == list(range(5))
    # the deflated Sharpe counts every configuration tried, in every study
    assert study["n_trials"] == 5 * len(keys) and study["seed"] == 7
    assert study["n_complete"] + study["n_pruned"] + study["n_failed"] == study["n_trials"]
    best = json.loads((a / "best_config.json").read_text())
    assert best["provenance"]["n_trials"] == study["n_trials"]
    assert sorted(o["model"] for o in best["overrides"]) == sorted(keys[1:])
    assert len(study["trial_sharpes"]) == study["n_complete"]
    assert study["trial_sharpe_var"] == pytest.approx(np.var(study["trial_sharpes"], ddof=1))
    html = (a / "index.html").read_text()
    assert "Optimisation history" in html and "plotly" in html and "bullish" in html


def test_changing_test_bars_changes_no_trial_value(market, tmp_path, space_file):
    """Point 1 of the issue: the test part (and the gap before it) never reaches a trial."""
    from bt_lstm.config import PipelineConfig, WindowConfig
    from bt_lstm.signals.windows import split_bounds

    frame = market.frame.copy()
    test_start = split_bounds(len(frame), WindowConfig(lookback=8)).test[0]
    assert split_bounds(len(frame), PipelineConfig().windows).test[0] == test_start
    paths = []
    for k, scale in enumerate((1.0, 1.7)):
        f = frame.copy()
        ohlc = ["open", "high", "low", "close"]
        f.iloc[test_start:, f.columns.get_indexer(ohlc)] *= scale
        f.iloc[test_start:, f.columns.get_loc("volume")] *= 3.0
        f.index = f.index.strftime("%Y-%m-%dT%H:%M:%SZ")
        paths.append(tmp_path / f"candles{k}.csv")
        f.to_csv(paths[-1], index_label="timestamp")
    _, t0 = _tune(paths[0], space_file, tmp_path / "r0", "--trials", "4", "--study", "same")
    _, t1 = _tune(paths[1], space_file, tmp_path / "r1", "--trials", "4", "--study", "same")
    cols = ["regime", "number", "state", "value", "param_lr", "param_hidden_size",
            "val_sharpe"]
    pd.testing.assert_frame_equal(t0[cols], t1[cols])


def test_best_config_round_trips_through_the_backtest(market_csv, space_file, tmp_path):
    from bt_lstm.config import PipelineConfig
    from runners import backtest

    folder, trials = _tune(market_csv, space_file, tmp_path / "r", "--trials", "3")
    best = PipelineConfig.from_json((folder / "best_config.json").read_text())
    assert best.model.hidden_size in (4, 8) and best.strategy.threshold >= 0.003
    study = json.loads((folder / "study.json").read_text())
    # each regime's network carries its own study's best settings
    assert [o.model for o in best.overrides] == study["study_order"][1:]
    for o in best.overrides:
        assert o.hidden_size == study["studies"][o.model]["best"]["params"]["hidden_size"]
        assert o.lr == study["studies"][o.model]["best"]["params"]["lr"]
    rc = backtest.main(["--csv", str(market_csv), "--config", str(folder / "best_config.json"),
                        "--quiet", "--no-tearsheet", "--models-dir", str(tmp_path / "m"),
                        "--reports-dir", str(tmp_path / "bt")])
    assert rc == 0
    (run,) = list((tmp_path / "bt").glob("backtest_*/latest"))
    saved = json.loads((run / "config.json").read_text())
    assert PipelineConfig.from_dict(saved) == best
    # the bundle rebuilt each network with its own size
    (manifest,) = list((tmp_path / "m").rglob("manifest.json"))
    sizes = json.loads(manifest.read_text())["model_hparams"]
    for o in best.overrides:
        name = f"regime_{['bearish', 'sideways', 'bullish'].index(o.model)}"
        assert sizes[name]["hidden_size"] == o.hidden_size


def test_failed_trials_are_recorded_with_their_reason(market_csv, tmp_path):
    """A configuration that crashes is a FAIL with its reason; the study goes on."""
    model_file = tmp_path / "fragile.py"
    model_file.write_text(
        "from torch import nn\nfrom bt_lstm.models import register_model\n\n\n"
        "@register_model('Fragile')\nclass Fragile(nn.Module):\n"
        "    def __init__(self, n_features, lookback, hidden_size=4, num_layers=1, dropout=0.0):\n"
        "        super().__init__()\n        self.hidden = hidden_size\n"
        "        self.net = nn.Linear(n_features * lookback, 1)\n\n"
        "    def forward(self, x):\n        if self.hidden == 8:\n"
        "            raise RuntimeError('out of memory (simulated)')\n"
        "        return self.net(x.flatten(1))[:, 0]\n")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"hidden_size": {"type": "categorical", "choices": [4, 8]},
                                 "lr": SPACE["lr"]}))
    folder, trials = _tune(market_csv, space, tmp_path / "r", "--trials", "6", "--model-file",
                           str(model_file), "--model", "Fragile", "--no-prune")
    assert (trials.groupby("regime").size() == 6).all()
    trials = trials[trials["regime"] == "pooled"]
    failed = trials[trials["state"] == "FAIL"]
    assert len(failed) >= 1
    assert (failed["param_hidden_size"] == 8).all()
    assert failed["fail_reason"].str.contains("out of memory").all()
    assert (trials.loc[trials["state"] == "COMPLETE", "param_hidden_size"] == 4).all()
    study = json.loads((folder / "study.json").read_text())
    assert study["studies"]["pooled"]["n_failed"] == len(failed)


@pytest.mark.slow
def test_journal_default_with_two_worker_processes_completes(market_csv, space_file, tmp_path):
    folder, trials = _tune(market_csv, space_file, tmp_path / "r", "--trials", "6",
                           "--jobs", "2")
    for _, mine in trials.groupby("regime"):
        assert sorted(mine["number"]) == list(range(6))
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert (folder / "journal.log").is_file() and (folder / "best_config.json").is_file()


def test_walk_forward_tunes_inside_every_fold_training_span(market_csv, space_file, tmp_path):
    from bt_lstm.data.candles import fingerprint_frame, load_ohlcv
    from runners import walk_forward

    rc = walk_forward.main(["--csv", str(market_csv), "--train-bars", "400", "--test-bars",
                            "300", *TINY_FLAGS, "--no-tearsheet", "--run-id", "wf",
                            "--reports-dir", str(tmp_path), "--tune-trials", "2",
                            "--space", str(space_file)])
    assert rc == 0
    metrics = json.loads((tmp_path / "wf" / "metrics.json").read_text())
    folds = pd.read_csv(tmp_path / "wf" / "folds.csv")
    assert len(metrics["tuning"]["folds"]) == len(folds) >= 2
    frame = load_ohlcv(market_csv)
    for k, row in enumerate(folds.itertuples()):
        study = json.loads((tmp_path / "wf" / "tune" / f"fold_{k:03d}" / "study.json").read_text())
        assert study["n_trials_requested"] == 2
        assert study["n_trials"] == 2 * len(study["studies"])
        # the study saw the bars from the fold's first training bar up to its test span only
        part = frame[(frame.index >= pd.Timestamp(row.train_start))
                     & (frame.index < pd.Timestamp(row.test_start))]
        assert study["tuning_fingerprint"] == fingerprint_frame(part)
    # --resume tunes as the run started (its config.json keeps the trials and the space) and
    # refuses tuning flags of its own
    assert walk_forward.main(["--resume", "wf", "--reports-dir", str(tmp_path), "--tune-trials",
                              "3", "--quiet"]) == 2
    assert walk_forward.main(["--resume", "wf", "--reports-dir", str(tmp_path),
                              "--no-tearsheet", "--quiet"]) == 0
    resumed = json.loads((tmp_path / "wf" / "metrics.json").read_text())
    assert resumed["tuning"] == metrics["tuning"]


def _journal_trials(folder: Path) -> list:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "journal.log")))
    return optuna.load_study(study_name="ctrlc-pooled",
                             storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_stops_after_the_running_trial_and_says_how_to_resume(market_csv, space_file,
                                                                     tmp_path, jobs):
    cmd = [sys.executable, str(REPO / "runners" / "tune.py"), "--csv", str(market_csv),
           *TINY_FLAGS, "--epochs", "8", "--patience", "8", "--no-prune", "--space",
           str(space_file), "--reports-dir", str(tmp_path), "--study", "ctrlc", "--trials",
           "40", "--jobs", jobs]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "tune_candles_4h_ctrlc"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (folder / "journal.log").is_file() and any(
                t.state.name == "COMPLETE" for t in _journal_trials(folder)):
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume with:" in err and "--study ctrlc" in err
    trials = _journal_trials(folder)
    assert 1 <= len(trials) < 40
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)  # none cut short
    assert (folder / "best_config.json").is_file() and (folder / "study.json").is_file()


# --- PostgreSQL: several workers on one study ------------------------------------------------

@pytest.fixture()
def pg_url():
    """The server's URL with a fresh, empty schema as its search path (dropped afterwards): the
    workers start on a database without Optuna's tables, as on a user's first run. Skip (or,
    with BT_LSTM_REQUIRE_SERVICES=1 as in CI, fail) without a server."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_DRIVER_URL, connect_args={"connect_timeout": 3},
                                      isolation_level="AUTOCOMMIT")
    schema = f"bt13_{uuid.uuid4().hex[:8]}"
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # noqa: BLE001 (any driver error means: no usable server)
        engine.dispose()
        why = (f"no PostgreSQL server answers at {PG_URL} ({str(exc).splitlines()[0]}); set "
               f"BT_LSTM_TEST_POSTGRES_URL")
        if os.environ.get("BT_LSTM_REQUIRE_SERVICES") == "1":
            pytest.fail(why + " (BT_LSTM_REQUIRE_SERVICES=1: services are required here)")
        pytest.skip(why)
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def _driver_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def _pg_trials(url: str, study: str) -> list:
    import optuna

    storage = optuna.storages.RDBStorage(_driver_url(url))
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _pg_delete(url: str, study: str) -> None:
    """Delete every study of a run (``<study>-pooled``, ``<study>-<regime>``)."""
    import optuna

    storage = optuna.storages.RDBStorage(_driver_url(url))
    try:
        for name in optuna.get_all_study_names(storage):
            if name.startswith(f"{study}-"):
                optuna.delete_study(study_name=name, storage=storage)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _worker(csv: Path, space: Path, reports: Path, url: str, study: str, *extra: str
            ) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "runners" / "tune.py"), "--csv",
                             str(csv), *TINY_FLAGS, "--space", str(space), "--reports-dir",
                             str(reports), "--storage", url, "--study", study, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_workers_on_one_postgresql_study_lose_no_trial(pg_url, market_csv, space_file,
                                                           tmp_path):
    study = _study_name()
    procs = [_worker(market_csv, space_file, tmp_path / f"w{k}", pg_url, study, "--trials", "8")
             for k in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        (folder,) = list((tmp_path / "w0").glob("tune_*"))
        keys = json.loads((folder / "study.json").read_text())["study_order"]
        assert keys[0] == "pooled" and len(keys) >= 2
        total = 0
        for key in keys:  # the workers went through the studies in the same order
            trials = _pg_trials(pg_url, f"{study}-{key}")
            numbers = sorted(t.number for t in trials)
            assert numbers == list(range(len(trials))) and len(trials) >= 8
            assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
            total += len(trials)
        # each process writes its own report of the whole run, and both agree on the config
        for k in range(2):
            (folder,) = list((tmp_path / f"w{k}").glob("tune_*"))
            assert len(pd.read_csv(folder / "trials.csv")) == total
        (a,), (b,) = [list((tmp_path / f"w{k}").glob("tune_*/best_config.json"))
                      for k in range(2)]
        assert a.read_text() == b.read_text()
    finally:
        _pg_delete(pg_url, study)


@pytest.mark.slow
def test_a_killed_worker_trial_fails_by_heartbeat_and_the_study_finishes(pg_url, market_csv,
                                                                         space_file, tmp_path):
    study = _study_name()
    pooled = f"{study}-pooled"  # the first study of the run: the victim dies inside it
    slow = ["--epochs", "30", "--patience", "30", "--no-prune", "--heartbeat", "1"]
    victim = _worker(market_csv, space_file, tmp_path / "v", pg_url, study, "--trials", "4",
                     *slow)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if any(t.state.name == "RUNNING" for t in _pg_trials(pg_url, pooled)):
                    break
            except KeyError:  # study not created yet
                pass
            time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        orphans = [t.number for t in _pg_trials(pg_url, pooled) if t.state.name == "RUNNING"]
        assert len(orphans) == 1
        other = _worker(market_csv, space_file, tmp_path / "o", pg_url, study, "--trials", "4",
                        *slow)
        out, err = other.communicate(timeout=300)
        assert other.returncode == 0, err
        trials = {t.number: t for t in _pg_trials(pg_url, pooled)}
        assert trials[orphans[0]].state.name == "FAIL"
        assert sorted(trials) == list(range(len(trials))) and len(trials) >= 4
        assert sum(t.state.name == "COMPLETE" for t in trials.values()) >= 1
    finally:
        if victim.poll() is None:
            victim.kill()
        _pg_delete(pg_url, study)
