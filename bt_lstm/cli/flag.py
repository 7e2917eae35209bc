"""One command-line flag as a value (name, help, type, range, example, config field), and the
parser that turns every argparse complaint into one line naming the flag.

The flags themselves are defined once, in ``bt_lstm.cli.args``.
"""
from __future__ import annotations

import argparse
import difflib
import re
from dataclasses import dataclass
from typing import Any


class FlagError(Exception):
    """A command line the parser refuses: one line for the user, exit code 2."""


@dataclass(frozen=True)
class Flag:
    """One flag of the ``bt-lstm`` command.

    ``kind`` is int, float, str, "list" (comma-separated names drawn from ``choices``),
    "features" (feature groups and price feature names, ``config.split_feature_spec``) or None
    (a switch). ``lo`` / ``hi`` bound a number (``lo_open`` / ``hi_open``: the bound itself is
    refused); ``example`` is a good value shown with every refusal. ``field`` is the config
    field the flag sets ("strategy.position_fraction"; "dqn.window" for ``DQNConfig``), whose
    default the help shows; ``default`` is the argparse default of a flag with no field.
    """

    option: str
    help: str
    kind: Any = str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    default: Any = None
    field: str | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    example: str | None = None
    required: bool = False

    @property
    def dest(self) -> str:
        """The argparse attribute name: ``--no-skill`` -> ``no_skill``."""
        return self.option.lstrip("-").replace("-", "_")

    def allowed(self) -> str:
        """What the flag accepts, in words ("a number in (0, 1]", "an integer >= 1")."""
        if self.kind == "list":
            return f"comma-separated names from {', '.join(self.choices or ())}"
        if self.kind == "features":
            from bt_lstm.config import FEATURE_NAMES, GROUP_FORMS

            return (f"comma-separated groups ({GROUP_FORMS}) or price feature names "
                    f"({', '.join(FEATURE_NAMES)})")
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        noun = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            return (f"{noun} in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{noun} {'<' if self.hi_open else '<='} {_num(self.hi)}"
        return noun if self.kind in (int, float) else "a value"

    def refusal(self, typed: str, what: str = "") -> str:
        """The one line a bad value gets: the flag as typed, what is allowed, an example."""
        example = f", e.g. {self.option} {self.example}" if self.example else ""
        return f"{self.option} {typed}: {what}expected {self.allowed()}{example}"

    def in_range(self, value: float) -> bool:
        """Whether ``value`` lies within the flag's bounds (open or closed)."""
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def convert(self, text: str) -> Any:
        """argparse ``type``: the value, or FlagError naming this flag."""
        if self.kind == "list":
            if not text.strip() and self.default == "":  # the default: none
                return ""
            names = tuple(n.strip() for n in text.split(",") if n.strip())
            for name in names:
                if name not in (self.choices or ()):
                    close = difflib.get_close_matches(name, self.choices or (), n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    raise FlagError(self.refusal(text, f"{name!r} is unknown{hint}; "))
            if not names or len(set(names)) != len(names):
                raise FlagError(self.refusal(text, "names without repeats "))
            return ",".join(names)
        if self.kind == "features":
            from bt_lstm.config import split_feature_spec

            try:
                split_feature_spec(text)
            except ValueError as exc:
                raise FlagError(self.refusal(text, f"{str(exc).split('; groups')[0]}; ")) \
                    from None
            return ",".join(e.strip() for e in text.split(",") if e.strip())
        try:
            value = self.kind(text)
        except ValueError:
            raise FlagError(self.refusal(text)) from None
        if self.kind in (int, float) and not (value == value and self.in_range(value)):
            raise FlagError(self.refusal(text))
        return value

    def add_to(self, group: Any, help_default: Any = None, **override: Any) -> None:
        """Add this flag to an argparse parser or group (``override``: required, default, and
        append: the flag may be given more than once, its values collected in a list)."""
        if "default" in override:
            help_default = override["default"]
        kw: dict[str, Any] = {"help": self.help_text(help_default), "dest": self.dest,
                              "default": override.get("default", self.default)}
        if self.kind is None:
            kw["action"] = "store_true"
            if self.default is None:  # a switch that overrides a config field only when given
                kw["default"] = None
        else:
            kw["metavar"] = self.metavar
            if self.choices and self.kind != "list":
                kw["choices"] = self.choices
            else:
                kw["type"] = self.convert
            kw["required"] = override.get("required", self.required)
            if override.get("append"):  # repeatable where a command takes several (--csv)
                kw["action"] = "append"
        group.add_argument(self.option, **kw)

    def help_text(self, default: Any) -> str:
        """The help line ``--help`` shows: ``{default}`` filled in, ``(default X)`` appended when
        the help does not name it, ``%`` escaped for argparse."""
        shown = self.default if default is None else default
        text = self.help.replace("{default}", _num(shown) if shown is not None else "")
        if "default" not in self.help and shown not in (None, False, "") \
                and self.kind is not None:
            text += f" (default {_num(shown)})"
        return text.replace("%", "%%")


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


class CommandParser(argparse.ArgumentParser):
    """argparse with one-line errors: an unknown flag gets "did you mean", a bad choice names
    the flag; ``--help`` output is argparse's own."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """argparse's error hook: raise FlagError with one line naming the flag (never print
        usage and exit)."""
        raise FlagError(self._one_line(message))

    def _one_line(self, message: str) -> str:
        options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        hint = f" ({self.prog} --help lists the flags)"
        if message.startswith("unrecognized arguments:"):
            unknown = [t for t in message.split(":", 1)[1].split() if t.startswith("-")]
            first = (unknown or message.split(":", 1)[1].split())[0].split("=")[0]
            close = difflib.get_close_matches(first, options, n=1, cutoff=0.6)
            if close:
                return f"unknown flag {first}; did you mean {close[0]}?{hint}"
            return f"unknown flag {first}{hint}"
        m = re.match(r"argument ([^:]+): invalid choice: '?([^' ]*)'? \(choose from (.*)\)",
                     message)
        if m:
            flag = m.group(1).split("/")[-1]
            choices = m.group(3).replace("'", "")
            close = difflib.get_close_matches(m.group(2), choices.split(", "), n=1)
            again = f"; did you mean {close[0]}?" if close else ""
            return f"{flag} {m.group(2)}: expected one of {choices}{again}"
        m = re.match(r"argument ([^:]+): (.*)", message)
        if m:
            return f"{m.group(1).split('/')[-1]}: {m.group(2)}{hint}"
        return message + hint
