"""Feature plugins (models/plugins.py): the docs' example trains and is recorded in the bundle,
a leaking plugin is refused before training, malformed output is one line, a changed file is
refused by the loader."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO, TINY_FLAGS

from bt_lstm.config import FeatureConfig
from bt_lstm.data.files import sha256_file
from bt_lstm.models.artifacts import ArtifactError
from bt_lstm.models.forecast import load_forecaster
from bt_lstm.models.plugins import PluginError, check_feature_inputs, check_plugin
from runners import backtest as runner


def docs_plugin(folder: Path) -> Path:
    """The complete plugin of docs/guides/features.md, written to ``folder``."""
    page = (REPO / "docs" / "guides" / "features.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S)
                if b.startswith("# my_features.py"))
    path = folder / "my_features.py"
    path.write_text(code)
    return path


def plugin_file(folder: Path, body: str, name: str = "mine.py") -> Path:
    path = folder / name
    path.write_text("import numpy as np\nimport pandas as pd\n\n\n" + body)
    return path


LEAKY = '''def peek(candles):
    return pd.DataFrame({"ok": candles["close"].pct_change(),
                         "next": candles["close"].shift(-1) / candles["close"]},
                        index=candles.index)
'''


def test_a_plugin_reading_the_next_close_is_refused_naming_column_and_bar(market, tmp_path):
    spec = f"{plugin_file(tmp_path, LEAKY)}:peek"
    with pytest.raises(PluginError) as info:
        check_plugin(spec, market.frame)
    msg = str(info.value)
    assert "\n" not in msg and "looks ahead" in msg and "'next'" in msg and "'ok'" not in msg
    first_cut = market.frame.index[max(1, len(market.frame) // 5)]
    assert f"at bar {first_cut}" in msg  # the cut bar itself: its next close was removed


@pytest.mark.parametrize("body, words", [
    ('def f(candles):\n    return pd.DataFrame({"s": "x"}, index=candles.index)\n',
     ["column 's' is not numeric"]),
    ('def f(candles):\n    return pd.DataFrame({"a": 1.0}, index=candles.index[1:])\n',
     ["another index"]),
    ('def f(candles):\n    return pd.DataFrame({"a": np.nan}, index=candles.index)\n',
     ["column 'a' is NaN on every bar"]),
    ('def f(candles):\n    return candles["close"]\n', ["returned Series, not a pandas"]),
    ('def g(candles):\n    return candles\n', ["has no function 'f'"]),
    ('def f(candles):\n    return candles[["trades"]]\n', ["failed: KeyError", "trades"]),
])
def test_malformed_plugins_are_one_line_each(market, tmp_path, body, words):
    spec = f"{plugin_file(tmp_path, body)}:f"
    with pytest.raises(PluginError) as info:
        check_feature_inputs(market.frame, FeatureConfig(groups=("price", spec)))
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_the_docs_plugin_trains_is_recorded_and_a_changed_file_is_refused(market_csv, tmp_path,
                                                                         capsys):
    path = docs_plugin(tmp_path)
    models = tmp_path / "models"
    rc = runner.main(["--csv", str(market_csv), *TINY_FLAGS, "--features",
                      f"price,{path}:range_position", "--models-dir", str(models),
                      "--reports-dir", str(tmp_path / "reports"), "--no-tearsheet"])
    assert rc == 0, capsys.readouterr().err
    (bundle,) = [p.parent for p in models.rglob("manifest.json")]
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = f"{path.resolve()}:range_position"
    assert manifest["feature_plugins"] == {spec: sha256_file(path)}
    assert manifest["features"][-2:] == ["range_pos", "ret_20"]
    assert len(manifest["features"]) == 9
    assert manifest["config"]["features"]["groups"] == ["price", spec]
    fc = load_forecaster(bundle)
    assert fc.forecast_frame(load_market(market_csv))["forecast"].notna().any()
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(ArtifactError, match="changed since the models were trained"):
        load_forecaster(bundle)


def load_market(csv: Path):
    from bt_lstm.data.candles import load_ohlcv

    return load_ohlcv(csv)


def test_a_leaking_plugin_stops_the_command_before_training(market_csv, tmp_path, capsys):
    spec = f"{plugin_file(tmp_path, LEAKY)}:peek"
    rc = runner.main(["--csv", str(market_csv), *TINY_FLAGS, "--features", f"price,{spec}",
                      "--models-dir", str(tmp_path / "models"),
                      "--reports-dir", str(tmp_path / "reports")])
    err = capsys.readouterr().err
    assert rc == 2 and "looks ahead" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "models").exists()


def test_flow_on_a_file_without_its_columns_exits_2_in_one_line(market_csv, tmp_path, capsys):
    rc = runner.main(["--csv", str(market_csv), *TINY_FLAGS, "--features", "price,flow",
                      "--models-dir", str(tmp_path / "models"),
                      "--reports-dir", str(tmp_path / "reports")])
    err = capsys.readouterr().err
    assert rc == 2 and "--columns all" in err and len(err.strip().splitlines()) == 1
