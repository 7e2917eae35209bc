"""FreqAI's data drawer for ``BtLstmRegressor``: saves and loads our bundle (``bundle.py``)
where freqtrade's ``pytorch`` model type would pickle a trainer, and unpickles nothing itself.

Everything else the drawer writes (metadata JSON, pair dictionary, training frame) stays
freqtrade's own; only the model file differs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import rapidjson
from datasieve.pipeline import Pipeline
from freqtrade.exceptions import OperationalException
from freqtrade.freqai.data_drawer import METADATA, METADATA_NUMBER_MODE, FreqaiDataDrawer
from freqtrade.freqai.data_kitchen import FreqaiDataKitchen

from bt_lstm.freqai.bundle import LstmBundle, load_bundle, manifest_path
from bt_lstm.models.artifacts import ArtifactError

logger = logging.getLogger(__name__)

MODEL_TYPE = "bt_lstm"  # matches none of freqtrade's model types: it saves no model file itself


class BtLstmDataDrawer(FreqaiDataDrawer):
    """``FreqaiDataDrawer`` whose model files are ``LstmBundle``s (state_dict + JSON)."""

    def __init__(self, full_path: Path, config: dict) -> None:
        super().__init__(full_path, config)
        self.model_type = MODEL_TYPE

    def save_data(self, model: Any, coin: str, dk: FreqaiDataKitchen) -> None:
        """Write the bundle, then freqtrade's metadata, pipelines and pair dictionary."""
        if not isinstance(model, LstmBundle):
            raise OperationalException(f"BtLstmDataDrawer saves LstmBundle models, not "
                                       f"{type(model).__name__}")
        path = model.save(Path(dk.data_path), dk.model_filename)
        logger.info("bt-lstm: saved %s (%d networks, state_dict + JSON)", path,
                    len(model.states))
        super().save_data(model, coin, dk)

    def load_data(self, coin: str, dk: FreqaiDataKitchen) -> Any:
        """The model of ``coin`` (from memory in live mode, else from its files), with the
        kitchen's metadata; a missing, changed or mismatched file is one OperationalException
        line."""
        if not self.pair_dict[coin]["model_filename"]:
            return None
        if dk.live:
            dk.model_filename = self.pair_dict[coin]["model_filename"]
            dk.data_path = Path(self.pair_dict[coin]["data_path"])
        self._load_kitchen(coin, dk)
        if dk.live and coin in self.model_dictionary:
            return self.model_dictionary[coin]
        try:
            model = load_bundle(Path(dk.data_path), dk.model_filename,
                                dk.training_features_list)
        except ArtifactError as exc:  # bt-lstm's CLI advice, said the FreqAI way
            advice = f"delete {Path(dk.data_path)} to retrain"
            raise OperationalException(
                f"BtLstmRegressor: {str(exc).replace('train the models again', advice)}"
            ) from None
        logger.info("bt-lstm: loaded %s (%d networks, sha256 checked, weights_only) instead "
                    "of retraining", manifest_path(Path(dk.data_path), dk.model_filename),
                    len(model.states))
        self.model_dictionary.setdefault(coin, model)
        return model

    def _load_kitchen(self, coin: str, dk: FreqaiDataKitchen) -> None:
        """Metadata from memory or its JSON; the (empty) pipelines are rebuilt, not unpickled."""
        if coin in self.meta_data_dictionary:
            dk.data = self.meta_data_dictionary[coin][METADATA]
        else:
            path = Path(dk.data_path) / f"{dk.model_filename}_{METADATA}.json"
            if not path.is_file():
                raise OperationalException(f"BtLstmRegressor: {path}: missing; retrain "
                                           f"(delete {Path(dk.data_path).name})")
            with path.open("r") as fp:
                dk.data = rapidjson.load(fp, number_mode=METADATA_NUMBER_MODE)
        dk.feature_pipeline = Pipeline([])
        dk.label_pipeline = Pipeline([])
        dk.training_features_list = dk.data["training_features_list"]
        dk.label_list = dk.data["label_list"]
