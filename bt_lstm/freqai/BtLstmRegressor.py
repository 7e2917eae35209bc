"""``BtLstmRegressor``: bt-lstm's networks as a FreqAI prediction model.

Select it with ``--freqaimodel BtLstmRegressor --freqaimodel-path $(python -m bt_lstm.freqai)``
(this folder; freqtrade's resolver imports this file by path, so the file keeps freqtrade's
one-class-per-file naming). ``freqai.model_training_parameters`` choose the architecture and
its hyperparameters (``params.py``).

Why a drawer subclass: freqtrade 2026.9's ``pytorch`` model type saves through
``PyTorchModelTrainer.save`` (``"pytrainer": self``, a pickled trainer and model class) and
loads with ``torch.load(weights_only=False)``, the step that fails for classes outside an
importable package. The drawer decides save and load by ``model_type`` with no hook for another
format, and ``IFreqaiModel`` calls ``self.dd.save_data`` / ``self.dd.load_data`` directly. So
this model replaces ``self.dd`` after the base constructor with ``BtLstmDataDrawer`` (a
subclass, public methods overridden, freqtrade's code unpatched) of model type ``bt_lstm``,
and overrides ``model_exists`` to look for our manifest. Training and prediction override
``train`` / ``fit`` / ``predict``: windows of ``lookback`` candles need the rows in time
order, which FreqAI's row-wise pipelines do not keep, so inputs are scaled by our scaler
(fitted on the training rows, saved in the manifest) and FreqAI's feature and label pipelines
are empty.
"""
from __future__ import annotations

import logging
from pathlib import Path
from time import time
from typing import Any

import numpy as np
import numpy.typing as npt
from datasieve.pipeline import Pipeline
from freqtrade.exceptions import OperationalException
from freqtrade.freqai.base_models.BasePyTorchRegressor import BasePyTorchRegressor
from freqtrade.freqai.data_kitchen import FreqaiDataKitchen
from freqtrade.freqai.torch.PyTorchDataConvertor import (
    DefaultPyTorchDataConvertor,
    PyTorchDataConvertor,
)
from pandas import DataFrame

from bt_lstm.freqai.bundle import LstmBundle, manifest_path
from bt_lstm.freqai.drawer import BtLstmDataDrawer
from bt_lstm.freqai.fitting import fit_bundle, package_version
from bt_lstm.freqai.params import LstmParams, parse_params

logger = logging.getLogger(__name__)

# FreqAI options that act on its own pipelines, which this model does not use
_UNUSED = ("principal_component_analysis", "use_SVM_to_remove_outliers", "DI_threshold",
           "use_DBSCAN_to_remove_outliers", "noise_standard_deviation")


class BtLstmRegressor(BasePyTorchRegressor):
    """A FreqAI regressor training bt-lstm's registered architectures (LSTM by default), one
    pooled network and optionally one per causal regime, guarded by validated skill."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            self.params: LstmParams = parse_params(
                self.freqai_info.get("model_training_parameters", {}),
                Path(self.config["user_data_dir"]))
            check_freqai_config(self.freqai_info)
        except ValueError as exc:
            raise OperationalException(f"BtLstmRegressor: {exc}") from None
        self.dd = BtLstmDataDrawer(Path(self.full_path), self.config)
        # Live, FreqAI predicts on the last conv_width candles and keeps the last row: give
        # that row its full window (and regime history); backtests predict whole windows.
        self.CONV_WIDTH = max(int(self.CONV_WIDTH), self.params.context_bars())

    @property
    def data_convertor(self) -> PyTorchDataConvertor:
        """FreqAI's tensor converter; unused, since bt_lstm builds the windows itself."""
        return DefaultPyTorchDataConvertor()  # unused: windows are built by bt_lstm

    def define_data_pipeline(self, threads: int = -1) -> Pipeline:
        """No feature pipeline: rows stay in time order, and the scaler (fitted on training rows
        only) lives in the bundle."""
        return Pipeline([])  # rows stay in time order; our scaler lives in the bundle

    def define_label_pipeline(self, threads: int = -1) -> Pipeline:
        """No label pipeline: a zero forecast stays a zero return, the skill guard's yardstick."""
        return Pipeline([])  # a zero forecast stays a zero return (the skill guard's yardstick)

    def model_exists(self, dk: FreqaiDataKitchen) -> bool:
        """Whether the pair's bundle (its manifest) is on disk, so FreqAI reuses it instead of
        training."""
        path = manifest_path(Path(dk.data_path), dk.model_filename)
        logger.info("%s model at %s", "Found" if path.is_file() else "Could not find",
                    Path(dk.data_path) / dk.model_filename)
        return path.is_file()

    def train(self, unfiltered_df: DataFrame, pair: str, dk: FreqaiDataKitchen,
              **kwargs: Any) -> Any:
        """FreqAI's split of the training frame (no shuffling), then ``fit``."""
        logger.info(f"-------------------- Starting training {pair} --------------------")
        start = time()
        features, labels = dk.filter_features(unfiltered_df, dk.training_features_list,
                                              dk.label_list, training_filter=True)
        dd = dk.make_train_test_datasets(features, labels)
        if not self.freqai_info.get("fit_live_predictions_candles", 0) or not self.live:
            dk.fit_labels()
        dk.feature_pipeline = self.define_data_pipeline()
        dk.label_pipeline = self.define_label_pipeline()
        model = self.fit(dd, dk, frame=unfiltered_df)
        logger.info(f"-------------------- Done training {pair} "
                    f"({time() - start:.2f} secs) --------------------")
        return model

    def fit(self, data_dictionary: dict, dk: FreqaiDataKitchen, **kwargs: Any) -> Any:
        """Train the bundle on ``kwargs['frame']``; validation starts at FreqAI's test rows."""
        frame: DataFrame = kwargs["frame"]
        if len(dk.label_list) != 1:
            raise OperationalException(f"BtLstmRegressor forecasts one label; the strategy "
                                       f"sets {len(dk.label_list)}: {dk.label_list}")
        test_index = data_dictionary["test_features"].index
        val_start = int(frame.index.get_indexer(test_index[:1])[0])
        extra = {"freqtrade": {"version": package_version("freqtrade"), "pair": dk.pair,
                               "model_filename": dk.model_filename}}
        horizon = self.freqai_info.get("feature_parameters", {}).get("label_period_candles", 1)
        return fit_bundle(frame, list(dk.training_features_list), dk.label_list[0], val_start,
                          self.params, extra, horizon=max(1, int(horizon)))

    def predict(self, unfiltered_df: DataFrame, dk: FreqaiDataKitchen,
                **kwargs: Any) -> tuple[DataFrame, npt.NDArray[np.int_]]:
        """Forecast every row; ``do_predict`` is 0 where the window is incomplete or the
        row's network has no validated skill (its forecast is then 0)."""
        bundle: LstmBundle = self.model
        dk.find_features(unfiltered_df)
        pred, do_predict = bundle.predict(unfiltered_df)
        dk.DI_values = np.zeros(len(unfiltered_df))
        dk.do_predict = do_predict
        return DataFrame({dk.label_list[0]: pred}), do_predict


def check_freqai_config(freqai: dict) -> None:
    """Settings this model cannot honour are a ValueError; ignored ones a warning."""
    split = freqai.get("data_split_parameters", {})
    if split.get("shuffle", False):
        raise ValueError("freqai.data_split_parameters.shuffle must be false: the model's "
                         "windows are candles in time order")
    if not float(split.get("test_size", 0.1)) > 0:
        raise ValueError("freqai.data_split_parameters.test_size must be > 0: the skill guard "
                         "validates each network on the test rows")
    ft = freqai.get("feature_parameters", {})
    if ft.get("shuffle_after_split", False):
        raise ValueError("freqai.feature_parameters.shuffle_after_split must be false: the "
                         "model's windows are candles in time order")
    for key in _UNUSED:
        if ft.get(key):
            logger.warning("BtLstmRegressor scales its own inputs: feature_parameters.%s is "
                           "not applied", key)
    if freqai.get("continual_learning"):
        logger.warning("BtLstmRegressor trains each model from scratch: continual_learning "
                       "is not applied")
