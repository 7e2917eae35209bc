"""The portfolio benchmark (``bt-lstm bench --markets N``): the one-run backtest of 1, 4, 16 ...
markets against the one-market backtest, time ratio and peak memory, written to JSON.

The markets are copies of real ones (BTCUSDT and ETHUSDT 4h from ../shared/data, else the
bundled BTCUSDT snapshot, else the synthetic market): copy k takes its market's candles from
``k x 97`` bars later onto the same timestamps, so every copy trades on the same 4h grid and
no two copies move alike. Signals are causal and model-free (each bar's mean log return over
its last 24 bars), so the figures are Backtrader's and the book-keeping's, not a network's.
Timings are medians of ``reps`` runs, measured here and never asserted in tests: wall time and
the process's CPU time (on shared cores the wall time moves with the other processes' load,
the CPU time much less; the load average before and after is recorded).
"""
from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bt_lstm.backtest.engine import run_backtest
from bt_lstm.backtest.portfolio import run_portfolio_backtest
from bt_lstm.config import StrategyConfig
from bt_lstm.data.candles import load_ohlcv
from bt_lstm.data.files import atomic_write_json
from bt_lstm.jobs.bench import REAL_DATA_ENV, REPO, machine_info, peak_rss_mib

BARS = 6000  # bars of each market in the benchmark (about 2.7 years of 4h candles)
SHIFT = 97  # bars between the starts of two copies of one market
# Trades about as often as the regime strategy's models on BTCUSDT 4h (one fill in 7 bars)
# without running the book's equity down to sizes that round to zero.
MOMENTUM_BARS = 24
TARGET = 1.2  # the portfolio of N markets should cost at most N x this x the one-market run


def market_counts(n: int) -> list[int]:
    """1, 4, 16, ... up to ``n``, and ``n`` itself: the sizes measured for ``--markets n``."""
    sizes = [1]
    while sizes[-1] * 4 <= n:
        sizes.append(sizes[-1] * 4)
    return sizes if sizes[-1] == n else sizes + [n]


def load_base_markets() -> tuple[dict[str, pd.DataFrame], str]:
    """BTCUSDT and ETHUSDT 4h from $BT_LSTM_REAL_DATA or ../shared/data; else the bundled
    BTCUSDT snapshot; else the synthetic market. Returns the frames and where they came from."""
    bases = [os.environ.get(REAL_DATA_ENV), str(Path.cwd().parent / "shared" / "data"),
             str(REPO.parent / "shared" / "data")]
    for base in filter(None, bases):
        paths = {s: Path(base) / f"{s}_4h.csv" for s in ("BTCUSDT", "ETHUSDT")}
        if all(p.is_file() for p in paths.values()):
            return {s: load_ohlcv(p) for s, p in paths.items()}, base
    from bt_lstm.data.snapshot import find_snapshot, load_snapshot

    snap = find_snapshot("BTCUSDT", "4h")
    if snap is not None:
        return {"BTCUSDT": load_snapshot(snap)}, "the bundled BTCUSDT 4h snapshot"
    from bt_lstm.data.synthetic import make_market

    return {"SAMPLE": make_market(n_bars=BARS + 64 * SHIFT, seed=1).frame}, "synthetic"


def copy_markets(bases: dict[str, pd.DataFrame], n: int, bars: int = BARS
                 ) -> dict[str, pd.DataFrame]:
    """``n`` markets named ``<BASE>_<k>``: copy k holds its base's candles from ``k // len(bases)
    x SHIFT`` bars later, on the timestamps of the base's last ``bars`` candles minus the
    shifts (every copy on one grid)."""
    names = list(bases)
    rounds = (n + len(names) - 1) // len(names)
    out = {}
    for k in range(n):
        base = bases[names[k % len(names)]]
        index = base.index[-(bars + rounds * SHIFT):][:bars]
        start = len(base) - (bars + rounds * SHIFT) + (k // len(names)) * SHIFT
        values = base.iloc[start:start + bars]
        out[f"{names[k % len(names)]}_{k}"] = pd.DataFrame(values.to_numpy(), index=index,
                                                          columns=values.columns)
    return out


def momentum_signals(frame: pd.DataFrame, bars: int = MOMENTUM_BARS) -> pd.DataFrame:
    """The forecast of each bar: the mean log return of its last ``bars`` bars (known at its
    close), regime 1."""
    forecast = np.log(frame["close"]).diff(bars) / bars
    return pd.DataFrame({"forecast": forecast, "regime": 1.0}, index=frame.index)


def timed(fn: Callable[[], Any], reps: int) -> dict[str, Any]:
    """Median wall and CPU seconds of ``reps`` calls of ``fn``, and every wall time."""
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return {"s": statistics.median(wall), "cpu_s": statistics.median(cpu), "runs_s": wall}


def _time_portfolio(markets: dict[str, pd.DataFrame], strategy_cls: type, cfg: StrategyConfig,
                    reps: int) -> tuple[dict[str, Any], int]:
    signals = {s: momentum_signals(f) for s, f in markets.items()}
    fills = len(run_portfolio_backtest(markets, signals, strategy_cls, cfg).fills)
    return timed(lambda: run_portfolio_backtest(markets, signals, strategy_cls, cfg), reps), fills


def _time_singles(markets: dict[str, pd.DataFrame], single_cls: type, cfg: StrategyConfig,
                  reps: int) -> dict[str, Any]:
    """Each market backtested alone, one after another: what the portfolio run replaces."""
    signals = {s: momentum_signals(f) for s, f in markets.items()}
    return timed(lambda: [run_backtest(f, single_cls, cfg, signals=signals[s])
                          for s, f in markets.items()], reps)


def _rss_child(markets: dict[str, pd.DataFrame], strategy_cls: type, cfg: StrategyConfig,
               queue: Any) -> None:
    before = peak_rss_mib()
    signals = {s: momentum_signals(f) for s, f in markets.items()}
    run_portfolio_backtest(markets, signals, strategy_cls, cfg)
    queue.put((before, peak_rss_mib()))


def peak_rss_portfolio(markets: dict[str, pd.DataFrame], strategy_cls: type,
                       cfg: StrategyConfig) -> tuple[float, float]:
    """Peak resident memory (MiB) of a fresh process given ``markets``: before the backtest
    (interpreter, libraries, candles) and after it."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_rss_child, args=(markets, strategy_cls, cfg, queue))
    proc.start()
    before, after = queue.get(timeout=1800)
    proc.join()
    return before, after


def run_portfolio_bench(n_markets: int, single_cls: type, portfolio_cls: type,
                        cfg: StrategyConfig, reps: int, out: Path, label: str = "",
                        bars: int = BARS) -> dict[str, Any]:
    """Every figure of the portfolio benchmark, written to ``out`` as JSON; returns the same.

    ``single_cls`` (the regime strategy) runs the one-market backtest of the first market;
    ``portfolio_cls`` the portfolio of 1, 4, 16 ... ``n_markets`` markets (``market_counts``).
    """
    bases, source = load_base_markets()
    markets = copy_markets(bases, n_markets, bars)
    first = next(iter(markets.values()))
    one_signals = momentum_signals(first)
    one_fills = len(run_backtest(first, single_cls, cfg, signals=one_signals).fills)
    load_before = os.getloadavg()
    one = timed(lambda: run_backtest(first, single_cls, cfg, signals=one_signals), reps)
    res: dict[str, Any] = {"label": label, "data": source, "bars_per_market": bars,
                           "reps": reps, "machine": machine_info(),
                           "one_market": {"strategy": single_cls.__name__, **one,
                                          "bars_per_s": bars / one["s"], "fills": one_fills},
                           "portfolio": []}
    for n in market_counts(n_markets):
        subset = dict(list(markets.items())[:n])
        run, fills = _time_portfolio(subset, portfolio_cls, cfg, reps)
        singles = _time_singles(subset, single_cls, cfg, reps)
        rss_before, rss_after = peak_rss_portfolio(subset, portfolio_cls, cfg)
        res["portfolio"].append({
            "markets": n, **run, "market_bars_per_s": n * bars / run["s"],
            "ratio_to_one_market": run["s"] / one["s"],
            "cpu_ratio_to_one_market": run["cpu_s"] / one["cpu_s"], "target_ratio": n * TARGET,
            "cpu_ratio_per_market": run["cpu_s"] / one["cpu_s"] / n, "fills": fills,
            "singles_s": singles["s"], "singles_cpu_s": singles["cpu_s"],
            "cpu_ratio_to_singles": run["cpu_s"] / singles["cpu_s"],
            "peak_rss_mib": rss_after, "rss_before_backtest_mib": rss_before})
    res["load_average_before"] = list(load_before)
    res["load_average_after"] = list(os.getloadavg())
    atomic_write_json(out, res)
    return res


def format_portfolio_bench(res: dict[str, Any]) -> str:
    """The terminal table of a portfolio benchmark."""
    one = res["one_market"]
    lines = [f"data: {res['data']}  ({res['bars_per_market']} bars per market, median of "
             f"{res['reps']})  machine: {res['machine']['cores']} cores",
             f"one market, {one['strategy']} (run_backtest): {one['s']:.2f} s wall, "
             f"{one['cpu_s']:.2f} s CPU, {one['fills']} fills; load average "
             f"{res['load_average_before'][0]:.1f} -> {res['load_average_after'][0]:.1f}", "",
             f"{'markets':>8}{'wall s':>9}{'CPU s':>8}{'x one (wall)':>14}{'x one (CPU)':>13}"
             f"{'target':>8}{'CPU x one / N':>15}{'CPU / alone':>13}{'fills':>8}"
             f"{'peak RSS MiB':>14}"]
    for r in res["portfolio"]:
        lines.append(f"{r['markets']:>8}{r['s']:>9.2f}{r['cpu_s']:>8.2f}"
                     f"{r['ratio_to_one_market']:>14.2f}{r['cpu_ratio_to_one_market']:>13.2f}"
                     f"{r['target_ratio']:>8.1f}{r['cpu_ratio_per_market']:>15.2f}"
                     f"{r['cpu_ratio_to_singles']:>13.2f}{r['fills']:>8}"
                     f"{r['peak_rss_mib']:>14.0f}")
    lines.append("CPU / alone: the portfolio run's CPU time over that of backtesting each of its "
                 "markets alone")
    return "\n".join(lines)
