"""Progress bars of the commands (tqdm, on stderr): training epochs, downloads, walk-forward
fold x regime tasks and tuning trials. Models are named as everywhere else: bearish, sideways,
bullish, pooled (never regime_0)."""
from __future__ import annotations

import sys
from typing import Any, Callable

from bt_lstm.config import model_key


def people(value: Any) -> str:
    """A number rounded for people: 4 significant digits (ints and text as they are)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class TrainProgress:
    """One bar per trained model (epochs, losses)."""

    def __init__(self, epochs: int, disable: bool = False) -> None:
        self.epochs, self.disable, self.bar = epochs, disable, None

    def factory(self, name: str, n_train: int, n_val: int) -> Callable[..., None]:
        """Start the bar of model ``name`` (closing the previous one); return the per-epoch
        callback training calls with its losses."""
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(total=self.epochs, desc=f"train {model_key(name)} ({n_train} windows)",
                        unit="epoch", disable=self.disable, file=sys.stderr, leave=True)

        def update(epoch: int, n: int, train_loss: float, val_loss: float, best: float) -> None:
            self.bar.update(1)
            self.bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}",
                                 best=f"{best:.3f}")
        return update

    def close(self) -> None:
        """Close the current bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def fetch_with_progress(req: Any, quiet: bool = False) -> Any:
    """Run a download behind a bar (files or pages)."""
    from tqdm import tqdm

    from bt_lstm.data.download import download_candles

    bars: list = []

    def progress(total: int, unit: str) -> Callable[[str], None]:
        bar = tqdm(total=total, unit=unit, desc=f"{req.file_symbol} {req.timeframe}",
                   disable=quiet, file=sys.stderr, leave=False)
        bars.append(bar)

        def step(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)
        return step

    try:
        return download_candles(req, progress)
    finally:
        for bar in bars:
            bar.close()


class FoldProgress:
    """One bar over the walk-forward's fold x model training tasks (elapsed time and ETA)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None

    def start(self, total: int, reused: int) -> Callable[[int, str], None]:
        """Open the bar over ``total`` tasks (``reused`` already done); return the callback each
        finished task calls."""
        from tqdm import tqdm

        if reused:
            print(f"resuming: {reused} folds already trained are reused", file=sys.stderr)
        self.bar = tqdm(total=total, desc="folds x models", unit="model", disable=self.quiet,
                        file=sys.stderr)

        def tick(fold: int, name: str) -> None:
            self.bar.update(1)
            self.bar.set_postfix(fold=fold, model=model_key(name))
        return tick

    def close(self) -> None:
        """Close the bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TrialProgress:
    """A bar over tuning trials with the best value so far."""

    def __init__(self, total: int, disable: bool = False) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="tune", unit="trial", disable=disable,
                        file=sys.stderr)

    def describe(self, study: str) -> None:
        """Show which study the bar is on."""
        self.bar.set_description(f"tune {study}")

    def update(self, done: int, best: float | None) -> None:
        """Move the bar to ``done`` trials and show the study's best value so far."""
        self.bar.total = max(self.bar.total, done)
        self.bar.n = done
        if best is not None:
            self.bar.set_postfix(best=f"{best:.4g}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
