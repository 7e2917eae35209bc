"""Golden backtest: final value, trade count and fill bars pinned on a fixed case.

Regenerate with `python tests/golden/backtest_case.py` after a deliberate change (say why in
the commit); an accidental change of fills, costs or sizing fails here.
"""
from __future__ import annotations

import json

import pytest
from golden.backtest_case import GOLDEN, golden_case


def test_golden_backtest_is_unchanged():
    pinned = json.loads(GOLDEN.read_text())
    now = golden_case()
    assert now["fill_bars"] == pinned["fill_bars"]
    assert now["trades"] == pinned["trades"]
    assert now["fill_sizes"] == pytest.approx(pinned["fill_sizes"], rel=1e-9)
    assert now["final_value"] == pytest.approx(pinned["final_value"], rel=1e-12)
    assert now["commission_paid"] == pytest.approx(pinned["commission_paid"], rel=1e-12)
    assert pinned["fill_bars"][0] == 11  # first forecast at bar 10 -> filled at the next open
