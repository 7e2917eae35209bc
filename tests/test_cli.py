"""The command line speaks the user's words: one flag registry, one-line errors naming the flag
typed (with its range and an example), "did you mean" for unknown flags, exit code 2, no flag
suggested that the command lacks, people's numbers and regime names, no import cycle."""
from __future__ import annotations

import ast
import importlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
from dataclasses import replace
from pathlib import Path

import pytest

from bt_lstm.cli import COMMANDS
from bt_lstm.cli.args import FLAGS, MARKET_SEED, describe_config_error
from bt_lstm.cli.common import user_message
from bt_lstm.config import ConfigError, PipelineConfig

REPO = Path(__file__).resolve().parents[1]


def _cli(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bt_lstm.cli", *argv], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("argv, words", [
    (["--fraction", "2"], ["--fraction 2", "(0, 1]", "e.g. --fraction 0.5"]),
    (["--threshold", "-0.01"], ["--threshold -0.01", "[0, 1]", "e.g. --threshold"]),
    (["--features", "foo"], ["--features foo", "'foo'", "log_ret", "e.g. --features"]),
    (["--thresold", "0.01"], ["--thresold", "did you mean --threshold?"]),
])
def test_the_four_bad_flags_give_one_line_naming_the_flag_and_exit_2(argv, words, tmp_path):
    res = _cli("backtest", *argv, "--reports-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr and "Config." not in res.stderr
    for word in words:
        assert word in lines[0]
    assert not (tmp_path / "r").exists()


def test_bt_lstm_without_a_command_lists_the_commands_and_exits_2():
    res = _cli()
    assert res.returncode == 2 and res.stdout == ""
    for name in COMMANDS:
        assert name in res.stderr


def test_a_bad_value_from_a_config_file_names_the_file_and_its_key(tmp_path):
    cfg = PipelineConfig().to_dict()
    cfg["strategy"]["position_fraction"] = 2.0
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    res = _cli("backtest", "--config", str(path), cwd=tmp_path)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and f"{path}: key strategy.position_fraction=2.0" in line
    assert "--fraction" in line and "StrategyConfig" not in line


def test_a_config_rule_across_two_flags_names_the_flag_typed():
    from bt_lstm.cli.args import build_config
    from bt_lstm.cli.backtest import build_parser

    args = build_parser().parse_args(["--train-frac", "0.9", "--val-frac", "0.2"])
    with pytest.raises(ConfigError) as info:
        build_config(args)
    line = describe_config_error(info.value, args)
    assert line.startswith("--val-frac 0.2: expected") and "train_frac + val_frac < 1" in line


def _parsers():
    for name, (module, _) in COMMANDS.items():
        yield name, importlib.import_module(f"bt_lstm.cli.{module}").build_parser(name)


def test_every_flag_of_every_command_comes_from_the_registry_with_help():
    options = {f.option for f in FLAGS.values()} | {MARKET_SEED.option, "-h", "--help"}
    for name, parser in _parsers():
        for action in parser._actions:
            assert action.help, (name, action.option_strings)
            assert set(action.option_strings) <= options, (name, action.option_strings)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_help_is_complete(command):
    res = _cli(command, "--help")
    assert res.returncode == 0, res.stderr
    module = importlib.import_module(f"bt_lstm.cli.{COMMANDS[command][0]}")
    for action in module.build_parser(command)._actions:
        for option in action.option_strings:
            assert option in res.stdout


def _config_with(field: str, value):
    section, name = field.split(".")
    if section == "dqn":
        from bt_lstm.rl.spec import DQNConfig

        return replace(DQNConfig(), **{name: value})
    cfg = PipelineConfig()
    return replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})


@pytest.mark.parametrize("flag", [f for f in FLAGS.values() if f.field and f.lo is not None],
                         ids=lambda f: f.option)
def test_the_registry_range_of_a_flag_is_its_config_fields_range(flag):
    """A value the flag refuses, the config refuses too, and the bounds the flag accepts the
    config accepts: the range is written twice but cannot drift."""
    def step(edge: float) -> float:
        return 1 if flag.kind is int else max(1e-9, abs(edge) * 1e-9)

    edges = [(flag.lo, not flag.lo_open), (flag.lo - step(flag.lo), False)]
    if flag.hi is not None:
        edges += [(flag.hi, not flag.hi_open), (flag.hi + step(flag.hi), False)]
    if flag.lo_open:
        edges.append((flag.lo + step(flag.lo), True))
    for value, ok in edges:
        value = flag.kind(value)
        assert flag.in_range(value) is ok, (flag.option, value)
        if flag.field == "dqn.envs" and value > 0:
            value_cfg = replace(_config_with("dqn.train_freq", 16), envs=value) if 16 % value \
                == 0 else None
            if value_cfg is None:
                continue
        if ok:
            _config_with(flag.field, value)
        else:
            with pytest.raises(ValueError):
                _config_with(flag.field, value)


def test_dqn_observation_is_its_own_flag_beside_the_pipeline_features():
    from bt_lstm.cli.args import build_config
    from bt_lstm.cli.dqn import build_parser, dqn_config

    args = build_parser().parse_args(["--observation", "pipeline", "--features", "rsi,log_ret",
                                      "--envs", "2", "--seed", "3"])
    cfg = build_config(args)
    dcfg = dqn_config(args, cfg.train.seed)
    assert dcfg.features == "pipeline" and cfg.features.names == ("rsi", "log_ret")
    assert dcfg.envs == 2 and dcfg.seed == 3 and dcfg.window == 50  # the rest: DQNConfig's


def test_resume_refuses_other_settings_naming_the_flags(tmp_path, capsys):
    from bt_lstm.cli.walk_forward import main

    rc = main(["--resume", "wf_x", "--lookback", "8", "--mode", "expanding",
               "--reports-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == ("error: --resume takes the run's own settings; drop --mode, "
                               "--lookback")


def test_no_flag_is_suggested_that_the_command_lacks():
    from bt_lstm.cli import backtest, serve
    from bt_lstm.models.artifacts import ArtifactError

    exc = ArtifactError("m/regime_0.pt: checksum does not match; retrain with --retrain")
    on_serve = user_message(exc, None, serve.build_parser())
    assert "`bt-lstm backtest --retrain`" in on_serve and "with --retrain" not in on_serve
    assert user_message(exc, None, backtest.build_parser()) == str(exc)
    named = ArtifactError("m: no complete model bundle; train one with runners/backtest.py "
                          "--retrain")
    assert user_message(named, None, serve.build_parser()) == str(named)
    corrupt = ArtifactError("m/regime_0.pt: checksum does not match regime_0.json; the file is "
                            "corrupt or was changed; train the models again")
    assert user_message(corrupt, None, serve.build_parser()).endswith(
        "train new models with `bt-lstm backtest --retrain`")
    assert user_message(corrupt, None, backtest.build_parser()).endswith(
        "train them again with --retrain")


def test_progress_bars_name_regimes_as_the_guard_does(capsys):
    from bt_lstm.cli.progress import FoldProgress, TrainProgress

    bars = TrainProgress(2)
    bars.factory("regime_0", 10, 5)(1, 10, 0.5, 0.6, 0.6)
    bars.factory("pooled", 10, 5)
    bars.close()
    folds = FoldProgress(quiet=False)
    folds.start(3, 0)(0, "regime_2")
    folds.close()
    err = capsys.readouterr().err
    assert "train bearish (10 windows)" in err and "train pooled" in err
    assert "model=bullish" in err and "regime_" not in err


def test_tune_prints_numbers_rounded_for_people(capsys):
    from bt_lstm.cli.tune import print_studies

    best = {"number": 3, "value": 0.9035659019229565,
            "params": {"lr": 0.0012345678, "hidden_size": 16}}
    print_studies({"studies": {"pooled": {"study": "s-pooled", "n_complete": 4, "n_pruned": 1,
                                          "n_failed": 0, "best": best}},
                   "n_trials": 5, "storage": "journal"})
    out = capsys.readouterr().out
    assert "0.9036" in out and "0.9035659" not in out and "0.001235" in out
    assert "{" not in out and "hidden_size 16" in out


def test_download_stops_at_once_when_the_host_is_unreachable(monkeypatch):
    from bt_lstm.data.download import web
    from bt_lstm.data.download.store import DownloadError

    waits: list[float] = []
    for reason, words in [(socket.gaierror(-2, "Name or service not known"), "does not resolve"),
                          (ConnectionRefusedError(111, "Connection refused"), "cannot connect")]:
        def refuse(*a, reason=reason, **k):
            raise urllib.error.URLError(reason)
        monkeypatch.setattr(web.urllib.request, "urlopen", refuse)
        with pytest.raises(DownloadError, match=words):
            web.http_get("http://example.invalid/x.zip", sleep=waits.append)
    assert waits == []

    def slow(*a, **k):  # a timeout may pass: it is retried, with backoff
        raise urllib.error.URLError(socket.timeout("timed out"))
    monkeypatch.setattr(web.urllib.request, "urlopen", slow)
    with pytest.raises(DownloadError, match="gave up after 3 tries"):
        web.http_get("http://example.invalid/x.zip", retries=2, sleep=waits.append)
    assert len(waits) == 2


def test_offline_download_command_fails_within_5_seconds(tmp_path):
    """A closed local port stands in for an unreachable network: one line, fast, exit 2."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nobody listens there
    start = time.perf_counter()
    res = _cli("download", "--symbol", "BTCUSDT", "--quiet", "--data-dir", str(tmp_path),
               "--base-url", f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert res.returncode == 2 and time.perf_counter() - start < 5
    assert res.stderr.strip().count("\n") == 0 and "cannot connect" in res.stderr


def _cli_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (REPO / "bt_lstm" / "cli").glob("*.py"):
        name = f"bt_lstm.cli.{path.stem}" if path.stem != "__init__" else "bt_lstm.cli"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):  # lazy imports inside functions too
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("bt_lstm.cli"):
                deps.add(node.module)
        graph[name] = deps - {name}
    return graph


def test_no_import_cycle_inside_the_cli():
    graph = _cli_imports()

    def visit(node: str, stack: list[str]) -> None:
        assert node not in stack, " -> ".join([*stack, node])
        for dep in graph.get(node, ()):
            visit(dep, [*stack, node])
    for module in graph:
        visit(module, [])


def test_bench_runs_library_code_never_a_runner_file():
    from bt_lstm.jobs import bench

    text = Path(bench.__file__).read_text()
    assert "runners/" not in text and "runners\\" not in text
    assert bench.RERUN[1:3] == ["-m", "bt_lstm.cli"]


def test_features_target_and_horizon_flags_reach_the_config(tmp_path):
    from bt_lstm.cli.args import build_config
    from bt_lstm.cli.backtest import build_parser

    plugin = tmp_path / "mine.py"
    args = build_parser().parse_args(["--features", f"rsi,calendar,htf:1d,{plugin}:feats",
                                      "--target", "vol-scaled", "--horizon", "3"])
    cfg = build_config(args)
    assert cfg.features.names == ("rsi",)
    assert cfg.features.groups == ("price", "calendar", "htf:1d", f"{plugin.resolve()}:feats")
    assert (cfg.windows.target, cfg.windows.horizon, cfg.windows.gap_bars) == ("vol-scaled", 3, 3)
