"""``Timeframe``: the one parser of bar lengths ('15m', '4h', '1d', '1w' ...) for the loader, the
downloader, the live feed and the CLI.

Standard library only: the downloader imports it and stays free of pandas.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation

# Every spelling the project accepted before this parser (data.candles: a decimal number and
# m / min / h / d / w in any case; data.download.store: s too; live.klines: Binance intervals).
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_MS = {"s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 604_800_000}
# str(): the largest unit that divides the length (Binance's interval spelling where it has one)
_CANONICAL = (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000),
              ("s", 1000))
ALLOWED = "a number and a unit s, m (or min), h, d or w, e.g. 15m, 1h, 4h, 1d, 1w"


@dataclass(frozen=True, order=True)
class Timeframe:
    """A bar length, a whole positive number of seconds, held in milliseconds.

    Examples
    --------
    >>> tf = Timeframe.parse("4h")
    >>> tf.ms, str(tf), tf.timedelta
    (14400000, '4h', datetime.timedelta(seconds=14400))
    >>> str(Timeframe.parse("240min")), str(Timeframe.parse("1.5h")), str(Timeframe.parse("7d"))
    ('4h', '90m', '1w')
    """

    ms: int

    def __post_init__(self) -> None:
        """Refuse a bar length that is not a whole positive number of seconds."""
        if isinstance(self.ms, bool) or not isinstance(self.ms, int) or self.ms <= 0 \
                or self.ms % 1000:
            raise ValueError(f"timeframe of {self.ms!r} ms is not a bar length; it must be a "
                             f"whole positive number of seconds")

    @classmethod
    def parse(cls, text: str | Timeframe) -> Timeframe:
        """'4h', '15m', '15min', '1d', '1w', '30s', '1.5h', ' 4H ' -> Timeframe.

        Raises
        ------
        ValueError
            One line naming the text and the spellings allowed.
        """
        if isinstance(text, Timeframe):
            return text
        match = _PATTERN.match(str(text))
        if match is not None:
            try:
                ms = Decimal(match.group(1)) * _UNIT_MS[match.group(2).lower()]
            except InvalidOperation:  # pragma: no cover - the pattern admits numbers only
                ms = Decimal(0)
            if ms > 0 and ms % 1000 == 0:
                return cls(int(ms))
        raise ValueError(f"timeframe {text!r} is not a bar length; use {ALLOWED}")

    @property
    def seconds(self) -> int:
        """The bar length in seconds."""
        return self.ms // 1000

    @property
    def timedelta(self) -> timedelta:
        """The bar length as a ``datetime.timedelta``."""
        return timedelta(milliseconds=self.ms)

    def __str__(self) -> str:
        """The canonical spelling: the largest whole unit (``4h``, ``1d``, ``15m``)."""
        for unit, size in _CANONICAL:
            if self.ms % size == 0:
                return f"{self.ms // size}{unit}"
        raise AssertionError("unreachable: ms is a whole number of seconds")
