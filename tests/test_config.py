from __future__ import annotations

import pytest

from bt_lstm.config import (
    FeatureConfig,
    PipelineConfig,
    StrategyConfig,
    TrainConfig,
    WindowConfig,
    replace,
)


def test_round_trip_through_json():
    cfg = PipelineConfig(windows=WindowConfig(lookback=12),
                         features=FeatureConfig(names=("log_ret", "rsi")),
                         strategy=StrategyConfig(long_only=True))
    again = PipelineConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.features.names == ("log_ret", "rsi")


def test_unknown_key_is_refused_with_a_suggestion():
    with pytest.raises(ValueError, match="did you mean 'lookback'"):
        WindowConfig.from_dict({"lookbak": 10})
    with pytest.raises(ValueError, match="unknown PipelineConfig key 'modle'"):
        PipelineConfig.from_dict({"modle": {}})


@pytest.mark.parametrize("make, field", [
    (lambda: WindowConfig(lookback=0), "lookback"),
    (lambda: WindowConfig(train_frac=0.9, val_frac=0.2), "val_frac"),
    (lambda: WindowConfig(horizon=3, gap_bars=1), "gap_bars"),
    (lambda: TrainConfig(device="tpu"), "device"),
    (lambda: StrategyConfig(position_fraction=1.5), "position_fraction"),
    (lambda: FeatureConfig(names=("rsi", "macd")), "names"),
])
def test_validation_names_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_configs_are_frozen_and_replace_makes_a_copy():
    cfg = WindowConfig()
    with pytest.raises(Exception):
        cfg.lookback = 5  # type: ignore[misc]
    assert replace(cfg, lookback=5).lookback == 5 and cfg.lookback == 32


def test_per_network_overrides_round_trip_and_resolve():
    from bt_lstm.config import ModelOverride, PipelineConfig

    cfg = PipelineConfig(overrides=(ModelOverride("bullish", hidden_size=8, lr=0.01),))
    assert PipelineConfig.from_json(cfg.to_json()) == cfg
    bull = cfg.for_model("regime_2")
    assert bull.model.hidden_size == 8 and bull.train.lr == 0.01 and bull.overrides == ()
    assert cfg.for_model("pooled").model == cfg.model
    assert "overrides" not in PipelineConfig().training_dict()  # old cache keys unchanged
    with pytest.raises(ValueError, match="ModelOverride.model"):
        ModelOverride("bulish")
    with pytest.raises(ValueError, match="dropout"):
        PipelineConfig(overrides=(ModelOverride("bullish", dropout=1.5),))
    with pytest.raises(ValueError, match="one override per model"):
        PipelineConfig(overrides=(ModelOverride("pooled"), ModelOverride("pooled")))


def test_feature_groups_and_target_round_trip_and_leave_old_cache_keys_alone():
    cfg = PipelineConfig(features=FeatureConfig(groups=("price", "calendar", "htf:1d",
                                                        "cross:ETHUSDT", "/x/f.py:feats")),
                         windows=WindowConfig(target="vol-scaled", horizon=3, gap_bars=3))
    assert PipelineConfig.from_json(cfg.to_json()) == cfg
    assert cfg.training_dict()["features"]["groups"] == ["price", "calendar", "htf:1d",
                                                         "cross:ETHUSDT", "/x/f.py:feats"]
    assert cfg.training_dict()["windows"]["target"] == "vol-scaled"
    default = PipelineConfig().training_dict()  # the default key is the one before groups
    assert "groups" not in default["features"] and "target" not in default["windows"]


@pytest.mark.parametrize("make, words", [
    (lambda: FeatureConfig(groups=("prices",)), ["groups", "'prices'", "htf:TF"]),
    (lambda: FeatureConfig(groups=("htf:1x",)), ["groups", "'htf:1x'"]),
    (lambda: FeatureConfig(groups=("price", "price")), ["groups", "without repeats"]),
    (lambda: FeatureConfig(groups=()), ["groups"]),
    (lambda: WindowConfig(target="vol"), ["target", "vol-scaled"]),
])
def test_bad_groups_and_targets_name_the_field(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_feature_spec_splits_price_names_from_groups():
    from bt_lstm.config import split_feature_spec

    assert split_feature_spec("price,calendar") == (None, ("price", "calendar"))
    assert split_feature_spec("calendar,rsi,log_ret") == (("rsi", "log_ret"),
                                                           ("calendar", "price"))
    with pytest.raises(ValueError, match="twice"):
        split_feature_spec("rsi,rsi")
