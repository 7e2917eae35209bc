"""bt-lstm inside freqtrade: ``BtLstmRegressor`` (a FreqAI prediction model), its model files
(state_dict + JSON), a candle converter and a local stand-in of the exchange's REST API.

Belongs here: everything that imports freqtrade (the only place in ``bt_lstm`` that does, an
import contract says so). Does not: networks or training (``models``), features and regimes
(``signals``). ``python -m bt_lstm.freqai`` prints the folder to pass as
``--freqaimodel-path``.
"""
from __future__ import annotations

from pathlib import Path

MODEL_PATH = Path(__file__).resolve().parent  # freqtrade's --freqaimodel-path


def freqaimodel_path() -> Path:
    """The folder holding ``BtLstmRegressor.py``, for ``--freqaimodel-path``."""
    return MODEL_PATH
