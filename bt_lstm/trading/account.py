"""``Account``: the one book of cash, position and pending order that the live engine and the
RL environment drive, with Backtrader's fill, cost and margin rules.

Timing: the order decided at the close of candle t fills at the open of the next real candle
(it waits past placeholders); its size comes from the account at that close.
"""
from __future__ import annotations

from typing import Any

from bt_lstm.config import StrategyConfig
from bt_lstm.trading.fills import accepts, commission_of, execute, fill_price
from bt_lstm.trading.rules import order_size
from bt_lstm.trading.values import Candle, Fill, is_placeholder

# The fields the live state stores (``live.state.ACCOUNT_FIELDS`` holds them, with its own)
STORED = ("cash", "position", "pending", "rounded_to_zero", "rejected")


class Account:
    """Cash, position (signed, fractional), the pending order and its counters.

    Parameters
    ----------
    cfg
        Costs and sizing: ``commission``, ``slippage``, ``position_fraction``, ``size_step``
        (``cash`` is the starting cash when ``cash`` is None).

    Notes
    -----
    Numbers are Backtrader's ``BackBroker`` ones (``TradableBarBroker`` with
    ``FractionalCommission``; tests/test_trading.py drives both through the same decisions):

    - at submission, an order that filled whole at the decision's close would leave cash below
      zero is rejected (Margin);
    - at the fill, a reversal closes first; its opening part is dropped (Margin) when the cash
      left cannot pay for it, so the fill is the closing part only;
    - on a placeholder candle (``is_placeholder``) the order waits (``deferred`` counts it).

    ``rounded_to_zero`` counts orders whose size rounded to zero at ``size_step``,
    ``rejected`` the orders refused by either check.
    """

    __slots__ = ("cfg", "cash", "position", "pending", "rounded_to_zero", "rejected",
                 "deferred")

    def __init__(self, cfg: StrategyConfig, cash: float | None = None, position: float = 0.0,
                 pending: float = 0.0, rounded_to_zero: int = 0, rejected: int = 0,
                 deferred: int = 0) -> None:
        self.cfg = cfg
        self.cash = float(cfg.cash if cash is None else cash)
        self.position, self.pending = position, pending
        self.rounded_to_zero, self.rejected, self.deferred = rounded_to_zero, rejected, deferred

    # -- state -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The stored fields (``STORED``)."""
        return {"cash": self.cash, "position": self.position, "pending": self.pending,
                "rounded_to_zero": self.rounded_to_zero, "rejected": self.rejected}

    @classmethod
    def from_dict(cls, row: dict[str, Any], cfg: StrategyConfig) -> Account:
        """From a stored row (extra keys, such as the live state's, are ignored)."""
        return cls(cfg, float(row["cash"]), float(row["position"]), float(row["pending"] or 0.0),
                   int(row.get("rounded_to_zero") or 0), int(row.get("rejected") or 0))

    def copy(self) -> Account:
        """An independent copy of the account (same settings, balances and counts)."""
        return Account(self.cfg, self.cash, self.position, self.pending, self.rounded_to_zero,
                       self.rejected, self.deferred)

    def __eq__(self, other: object) -> bool:
        """Equal when every balance and count is."""
        return isinstance(other, Account) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        """The account's balances and counts."""
        return ("Account(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__[1:])
                + ")")

    @property
    def side(self) -> int:
        """+1 long, -1 short, 0 flat."""
        return (self.position > 0) - (self.position < 0)

    def value(self, price: float) -> float:
        """Cash plus the position marked at ``price`` (stock-like, as ``broker.getvalue``)."""
        return self.cash + self.position * price

    # -- the two moments of a candle --------------------------------------------------------
    def fill(self, candle: Candle) -> Fill | None:
        """At the candle's open: the pending order fills (None when there is none, when the
        candle is a placeholder and it waits, or when the margin check drops all of it)."""
        size = self.pending
        if not size:
            return None
        t, o, h, lo, c, v = candle
        if is_placeholder(o, h, lo, c, v):
            self.deferred += 1
            return None
        self.pending = 0.0
        comm_rate = self.cfg.commission
        price = fill_price(size, o, h, lo, self.cfg.slippage)
        self.cash, closed, opened = execute(self.cash, self.position, size, price, comm_rate)
        self.position = self.position + closed + opened
        done = size
        # an opening part was wanted (the order is not all closing) but refused (Margin)
        if opened == 0.0 and closed != size:
            self.rejected += 1
            done = closed
            if not closed:
                return None
        return Fill(t, done, price, commission_of(closed, price, comm_rate)
                    + commission_of(opened, price, comm_rate))

    def decide(self, want: int, close: float) -> float | None:
        """At the close: the order that moves the position to side ``want`` (+1, 0, -1), sized
        on the value at ``close`` and checked for margin; it fills at the next real open.

        Returns the submitted size; None when no order was submitted (one is pending, already
        on that side, the size rounds to zero, or the margin check refused it).
        """
        if self.pending:
            return None
        c = self.cfg
        size = order_size(want, self.position, self.cash + self.position * close, close,
                          c.position_fraction, c.size_step)
        if size is None:
            return None
        if size == 0.0:
            self.rounded_to_zero += 1
            return None
        return self.submit(size, close)

    def submit(self, size: float, close: float) -> float | None:
        """Submit an order of ``size`` at the close ``close``: pending, or rejected (Margin)
        when filling it whole at ``close`` would leave cash below zero."""
        if not accepts(self.cash, self.position, size, close, self.cfg.commission):
            self.rejected += 1
            return None
        self.pending = size
        return size

    def step(self, candle: Candle, want: int) -> Fill | None:
        """One candle: the pending order fills at its open (``fill``), then the close decides
        the next order towards ``want`` (``decide``). Returns the fill."""
        filled = self.fill(candle)
        self.decide(want, candle[4])
        return filled
