"""Networks and everything that touches torch: architectures and their registry, training, model
bundles on disk, and the ``Forecaster`` that turns candles into forecasts.

Belongs here: ``nn.Module`` code, training loops, ``state_dict`` + JSON artifacts, inference.
Does not: backtrader, reports, run folders, command-line handling. torch is imported nowhere
else in ``bt_lstm``.

``register_model`` is re-exported so users' architecture files can write
``from bt_lstm.models import register_model``.
"""
from bt_lstm.models.nets import register_model, registered_models

__all__ = ["register_model", "registered_models"]
