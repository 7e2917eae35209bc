"""Artifact tampering: every altered bundle is refused, says why, and nothing is changed."""
from __future__ import annotations

import json

import pytest

from bt_lstm.models.artifacts import ArtifactError
from bt_lstm.models.forecast import load_forecaster


@pytest.fixture()
def bundle(fitted, tmp_path):
    fitted[0].forecaster.save(tmp_path / "bundle", fitted[0].model_meta)
    return tmp_path / "bundle"


def edit_json(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def truncate(b):
    pt = b / "regime_1.pt"
    pt.write_bytes(pt.read_bytes()[: len(pt.read_bytes()) // 2])


def flip_a_byte(b):
    pt = b / "regime_1.pt"
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0x01
    pt.write_bytes(bytes(data))


CASES = {
    "truncated weights": (truncate, r"checksum does not match"),
    "corrupted weights": (flip_a_byte, r"checksum does not match"),
    "missing fields": (lambda b: edit_json(b / "regime_1.json", lambda m: [
        m.pop("hparams"), m.pop("weights_sha256")]), r"missing fields hparams, weights_sha256"),
    "feature order": (lambda b: edit_json(b / "regime_1.json", lambda m: m.update(
        features=list(reversed(m["features"])))), r"differs from manifest.json in features"),
    "feature list": (lambda b: edit_json(b / "regime_1.json", lambda m: m.update(
        features=m["features"][:-1])), r"in features"),
    "lookback": (lambda b: edit_json(b / "regime_1.json", lambda m: m.update(lookback=99)),
                 r"in lookback"),
    "hidden size": (lambda b: edit_json(b / "regime_1.json", lambda m: m["hparams"].update(
        hidden_size=64)), r"in hparams"),
    "schema version": (lambda b: edit_json(b / "regime_1.json",
                                           lambda m: m.update(schema_version=99)),
                       r"schema_version 99 is not 1"),
    "manifest schema": (lambda b: edit_json(b / "manifest.json",
                                            lambda m: m.update(schema_version=0)),
                        r"bundle schema 0 is not 1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_bundle_is_refused_and_left_as_it_was(bundle, case):
    tamper, match = CASES[case]
    tamper(bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    with pytest.raises(ArtifactError, match=match) as info:
        load_forecaster(bundle)
    assert "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before  # nothing changed


def test_several_differing_fields_are_all_listed(bundle):
    edit_json(bundle / "regime_1.json", lambda m: m.update(lookback=99, arch="gru"))
    with pytest.raises(ArtifactError, match=r"in lookback, arch"):
        load_forecaster(bundle)


def test_untampered_bundle_loads(bundle, fitted, market):
    a = fitted[0].forecaster.forecast_frame(market.frame)["forecast"].to_numpy()
    b = load_forecaster(bundle).forecast_frame(market.frame)["forecast"].to_numpy()
    assert (a[~(a != a)] == b[~(b != b)]).all()
