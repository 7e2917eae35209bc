"""Known-truth benchmark: on the synthetic market, compare what was learned with the truth.

The generator knows every bar's regime and its true expected next-bar return (the oracle
forecast, the best any model can do), so the pipeline's regime labels, forecasts and strategy
can be scored against a ceiling. Everything is scored on the test part only.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.backtest.engine import run_backtest
from bt_lstm.backtest.metrics import score_backtest
from bt_lstm.config import PipelineConfig
from bt_lstm.data.synthetic import SyntheticMarket
from bt_lstm.research.baselines import segment_forecasts
from bt_lstm.research.pipeline import fit_pipeline
from bt_lstm.research.scoring import regression_scores
from bt_lstm.signals.regimes import REGIME_LABELS, apply_regimes, fit_regimes
from bt_lstm.signals.windows import split_bounds

TARGET_R2_SHARE = 0.8  # regime LSTM R² >= 0.8 x the oracle's
TARGET_BALANCED_ACCURACY = 0.85  # default classifier, against the true regimes
R2_MODELS = ("regime_model", "global_lstm", "mlp", "ridge")


def _balanced(true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, recall_score

    known = pred >= 0
    recall = recall_score(true[known], pred[known], labels=[0, 1, 2], average=None,
                          zero_division=0.0)
    with warnings.catch_warnings():
        # a short span may hold one regime only, or lack one the classifier still predicts:
        # expected on short spans, and the recall per regime above says which
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
        balanced = float(balanced_accuracy_score(true[known], pred[known]))
    return {"balanced_accuracy": balanced,
            "recall": {REGIME_LABELS[r]: float(recall[r]) for r in range(3)},
            "bars": int(known.sum()), "true_bars": {REGIME_LABELS[r]: int((true == r).sum())
                                                     for r in range(3)}}


def classifier_accuracy(market: SyntheticMarket, cfg: PipelineConfig, method: str
                        ) -> dict[str, Any]:
    """Balanced accuracy and recall per regime against the true regimes, out of sample.

    ``out_of_sample`` covers every bar after the training part (the classifier is fitted on
    training bars only), ``test`` the test part alone, and ``settled`` the out-of-sample bars
    more than ``trend_bars`` after a true regime switch: a causal classifier on a trailing
    window cannot know of a switch until its window has seen it.
    """
    bounds = split_bounds(len(market.frame), cfg.windows)
    params = fit_regimes(market.frame.iloc[:bounds.train[1]],
                         replace(cfg.regimes, method=method), cfg.train.seed)
    pred = apply_regimes(market.frame, params).to_numpy()
    true = market.regime.to_numpy()
    switch = np.flatnonzero(np.diff(true) != 0) + 1
    since = np.full(len(true), 10**9)
    for s in switch:
        since[s:] = np.minimum(since[s:], np.arange(len(true) - s))
    oos = slice(bounds.train[1], None)
    settled = since[oos] >= cfg.regimes.trend_bars
    return {"out_of_sample": _balanced(true[oos], pred[oos]),
            "test": _balanced(true[bounds.test[0]:], pred[bounds.test[0]:]),
            "settled": _balanced(true[oos][settled], pred[oos][settled])}


def _sharpe(test: pd.DataFrame, signals: pd.DataFrame, strategy_cls: type,
            cfg: PipelineConfig) -> dict[str, float]:
    result = run_backtest(test, strategy_cls, cfg.strategy, signals=signals, inference="batch")
    _, _, perf, bh = score_backtest(test, result, cfg)
    return {"sharpe": perf["sharpe"], "total_return": perf["total_return"],
            "trades": perf["trades"], "buy_and_hold_sharpe": bh["sharpe"]}


def run_truth_bench(market: SyntheticMarket, cfg: PipelineConfig, strategy_cls: type,
                    classifiers: tuple[str, ...] = ("rule", "gmm")) -> dict[str, Any]:
    """Classifier accuracy, R² against the oracle's, and oracle vs model strategy Sharpe."""
    frame = market.frame
    fit, bounds = fit_pipeline(frame, cfg)
    table = segment_forecasts(frame, cfg, bounds, fit.forecaster)
    table["oracle"] = market.expected_return.reindex(table.index).to_numpy()
    r2 = {name: regression_scores(table[name], table["realised"])["r2"]
          for name in ("oracle", *R2_MODELS)}
    oracle_r2 = r2["oracle"]
    test = frame.iloc[bounds.test[0]:]
    model_signals = fit.forecaster.forecast_frame(frame).iloc[bounds.test[0]:]
    # The oracle trades on the true expected return wherever the model could trade at all.
    oracle_signals = model_signals.assign(
        forecast=market.expected_return.iloc[bounds.test[0]:].where(
            model_signals["forecast"].notna()))
    accuracy = {m: classifier_accuracy(market, cfg, m) for m in classifiers}
    default = cfg.regimes.method
    share = r2["regime_model"] / oracle_r2 if oracle_r2 > 0 else float("nan")
    return {
        "test_bars": int(len(table)),
        "classifiers": accuracy,
        "r2": r2, "r2_share_of_oracle": {m: (r2[m] / oracle_r2 if oracle_r2 > 0 else None)
                                        for m in R2_MODELS},
        "strategy": {"model": _sharpe(test, model_signals, strategy_cls, cfg),
                     "oracle": _sharpe(test, oracle_signals, strategy_cls, cfg)},
        "targets": {
            "regime_lstm_r2_share": {"value": share, "target": TARGET_R2_SHARE,
                                     "met": bool(share >= TARGET_R2_SHARE)},
            "default_classifier_balanced_accuracy": {
                "classifier": default,
                "scope": "out_of_sample",
                "value": accuracy[default]["out_of_sample"]["balanced_accuracy"]
                if default in accuracy else None,
                "target": TARGET_BALANCED_ACCURACY,
                "met": bool(default in accuracy and accuracy[default]["out_of_sample"]
                            ["balanced_accuracy"] >= TARGET_BALANCED_ACCURACY)}},
    }


def format_truth(res: dict[str, Any]) -> str:
    """The benchmark as a terminal table."""
    lines = [f"known-truth benchmark ({res['test_bars']} test bars)", "",
             f"{'regime classifier':<26}{'balanced acc':>14}{'bearish':>10}{'sideways':>10}"
             f"{'bullish':>10}{'bars':>7}"]
    for name, scopes in res["classifiers"].items():
        for scope in ("out_of_sample", "test", "settled"):
            a = scopes[scope]
            rec = a["recall"]
            lines.append(f"  {name + ' ' + scope:<24}{a['balanced_accuracy']:>14.3f}"
                         f"{rec['bearish']:>10.3f}{rec['sideways']:>10.3f}{rec['bullish']:>10.3f}"
                         f"{a['bars']:>7}")
    lines += ["", f"{'forecaster':<20}{'R2':>10}{'share of oracle':>18}"]
    lines.append(f"  {'oracle (ceiling)':<18}{res['r2']['oracle']:>10.4f}{'1.00':>18}")
    for name in R2_MODELS:
        share = res["r2_share_of_oracle"][name]
        lines.append(f"  {name:<18}{res['r2'][name]:>10.4f}"
                     f"{(f'{share:.2f}' if share is not None else 'n/a'):>18}")
    s = res["strategy"]
    lines += ["", f"{'strategy':<20}{'Sharpe':>10}{'return':>12}{'trades':>8}",
              f"  {'model':<18}{_num(s['model']['sharpe']):>10}"
              f"{100 * s['model']['total_return']:>11.1f}%{s['model']['trades']:>8}",
              f"  {'oracle':<18}{_num(s['oracle']['sharpe']):>10}"
              f"{100 * s['oracle']['total_return']:>11.1f}%{s['oracle']['trades']:>8}",
              f"  {'buy & hold':<18}{_num(s['model']['buy_and_hold_sharpe']):>10}", ""]
    for name, t in res["targets"].items():
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"target {name}: {value} (target >= {t['target']}) "
                     f"{'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    """Two decimals; n/a for a Sharpe that does not exist (a strategy that never traded)."""
    return "n/a" if value is None or value != value else f"{value:.2f}"
