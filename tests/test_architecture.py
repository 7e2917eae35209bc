"""The layout keeps its shape: import contracts hold (and catch a wrong import), ruff is clean,
runners stay thin shims, and ``bt-lstm --help`` imports no heavy library."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": str(BIN), "PYTHONDONTWRITEBYTECODE": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([_tool("lint-imports"), "--config", "setup.cfg", "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    res = _lint_imports(REPO, REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("bt_lstm/signals/features.py", "import torch", "torch only under bt_lstm.models"),
    ("bt_lstm/data/candles.py", "from bt_lstm.models import nets",
     "Layers point one way"),
    ("bt_lstm/jobs/backtest.py", "import strategies.lstm_strategy",
     "The library never imports strategies/"),
    ("bt_lstm/research/audit.py", "import matplotlib",
     "quantstats and matplotlib only in bt_lstm.backtest.reports"),
    ("bt_lstm/jobs/backtest.py", "import ccxt",
     "ccxt and HTTP clients only under bt_lstm.data"),
    ("bt_lstm/cli/common.py", "import urllib.request",
     "ccxt and HTTP clients only under bt_lstm.data"),
])
def test_a_wrong_import_breaks_its_contract(tmp_path, module, line, contract):
    """A copy of the tree with one planted import fails lint-imports, naming the contract."""
    assert contract in broken_contracts(tmp_path, module, line)


def broken_contracts(tmp_path: Path, module: str, line: str) -> str:
    """lint-imports on a copy of the tree with ``line`` appended to ``module``: it must fail;
    returns the text of its broken contracts (line breaks folded)."""
    for name in ("bt_lstm", "strategies", "runners"):
        shutil.copytree(REPO / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "setup.cfg", tmp_path / "setup.cfg")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # planted by the test\n")
    res = _lint_imports(tmp_path, tmp_path)
    assert res.returncode != 0, res.stdout
    return res.stdout.split("Broken contracts", 1)[-1].replace("\n", " ")


def test_ruff_is_clean():
    res = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


# runners whose script name differs from their CLI module (the issue named the script)
CLI_MODULE_OF_RUNNER = {"train_dqn": "dqn"}


def test_runners_are_thin_shims_of_the_cli():
    for path in sorted((REPO / "runners").glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        assert len(text.splitlines()) <= 20, f"{path.name} has grown past 20 lines"
        module = CLI_MODULE_OF_RUNNER.get(path.stem, path.stem)
        assert f"from bt_lstm.cli.{module} import" in text


def test_only_config_cli_and_init_sit_directly_under_bt_lstm():
    loose = sorted(p.name for p in (REPO / "bt_lstm").glob("*.py"))
    assert loose == ["__init__.py", "config.py"]
    for pkg in sorted(p for p in (REPO / "bt_lstm").iterdir() if p.is_dir()
                      and p.name != "__pycache__"):
        init = pkg / "__init__.py"
        assert init.is_file() and init.read_text().startswith('"""'), \
            f"{pkg.name}/__init__.py needs a docstring saying what belongs there"


def test_top_level_help_lists_every_command_without_heavy_imports():
    code = "\n".join([
        "import sys, io, contextlib",
        "from bt_lstm.cli import COMMANDS, main",
        "buf = io.StringIO()",
        "with contextlib.redirect_stdout(buf):",
        "    rc = main(['--help'])",
        "heavy = [m for m in ('torch', 'backtrader', 'pandas', 'quantstats', 'matplotlib')",
        "         if m in sys.modules]",
        "print(rc, heavy, all(c in buf.getvalue() for c in COMMANDS))"])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "0 [] True", res.stdout + res.stderr


@pytest.mark.parametrize("runner, command", [
    ("backtest", "backtest"), ("walk_forward", "walk-forward"), ("evaluate", "evaluate"),
    ("lookahead", "lookahead"), ("bench", "bench"), ("bench_truth", "bench-truth"),
    ("download", "download"), ("tune", "tune"), ("train_dqn", "dqn"), ("serve", "serve"),
    ("live", "live"), ("replay", "replay")])
def test_subcommand_help_equals_the_runner_help(runner, command):
    """`bt-lstm X --help` and `python runners/X.py --help` differ only in the usage name."""
    script = subprocess.run([sys.executable, str(REPO / "runners" / f"{runner}.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    cli = subprocess.run([sys.executable, "-m", "bt_lstm.cli", command, "--help"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert script.returncode == cli.returncode == 0, script.stderr + cli.stderr

    def body(text: str) -> str:  # from the first blank line on: everything but the usage lines
        return text.split("\n\n", 1)[1]

    assert body(script.stdout) == body(cli.stdout)
    assert cli.stdout.startswith(f"usage: bt-lstm {command} ")


def test_unknown_subcommand_is_one_line_and_exit_2():
    res = subprocess.run([sys.executable, "-m", "bt_lstm.cli", "bactest"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "bt-lstm: unknown command 'bactest'; did you mean backtest? (bt-lstm --help lists them)"]
