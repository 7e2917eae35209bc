"""The CLI reference pages, generated from the argparse parsers themselves.

Every subcommand listed in ``bt_lstm.cli.COMMANDS`` gets a page built from its module's
``build_parser``: the description and usage exactly as ``--help`` prints them, then one table
per argument group with every flag, its argument, its default and its help text. The build
(``docs/hooks.py``) calls :func:`cli_pages`, so the reference cannot drift from ``--help``.

    python docs/gen_cli.py backtest      # print one page's Markdown
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys

DEFAULT = re.compile(r"\s*\(default:? ([^()]*(?:\([^()]*\)[^()]*)*)\)\s*$")


def _cell(text: str) -> str:
    """Markdown table cell: whitespace collapsed; outside `code` spans, the characters that
    Markdown or HTML would read (<SYMBOL>, *, _) escaped; pipes escaped everywhere."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # even parts are outside backticks
        parts[i] = (parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                    .replace("*", "\\*").replace("_", "\\_"))
    return "`".join(parts).replace("|", "\\|")


def _code(text: str) -> str:
    """A table cell in backticks (empty text: an empty cell)."""
    return "`" + " ".join(text.split()).replace("|", "\\|") + "`" if text else ""


def _help_and_default(parser: argparse.ArgumentParser,
                      action: argparse.Action) -> tuple[str, str]:
    """The help text as ``--help`` shows it, and the default it names (or argparse's)."""
    formatter = parser._get_formatter()
    text = formatter._expand_help(action) if action.help else ""
    m = DEFAULT.search(text)
    if m:
        return text[:m.start()], m.group(1)
    default = action.default
    if default in (None, False, argparse.SUPPRESS) or isinstance(action, argparse._HelpAction):
        return text, ""
    return text, str(default)


def _argument(action: argparse.Action) -> str:
    """What follows the flag: its metavar, or its choices."""
    if action.nargs == 0:
        return ""
    if action.metavar:
        return str(action.metavar)
    if action.choices:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def flag_table(parser: argparse.ArgumentParser, group: argparse._ArgumentGroup) -> list[str]:
    """One Markdown table of a group's flags (help excluded)."""
    rows = ["| flag | argument | default | meaning |", "|---|---|---|---|"]
    for action in group._group_actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text, default = _help_and_default(parser, action)
        flags = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        arg = _argument(action)
        rows.append(f"| {flags} | {_code(arg)} | {_code(default)} | {_cell(text)} |")
    return rows if len(rows) > 2 else []


def command_page(name: str, module: str, line: str) -> str:
    """The Markdown reference page of ``bt-lstm <name>``."""
    mod = importlib.import_module(f"bt_lstm.cli.{module}")
    parser = mod.build_parser(prog=f"bt-lstm {name}")
    usage = parser.format_usage().strip()
    out = [f"# bt-lstm {name}", "", f"{line}.", "",
           f"Generated from `bt_lstm.cli.{module}.build_parser` at build time: the same "
           f"flags, defaults and help as `bt-lstm {name} --help` (and "
           f"`python runners/{module}.py --help`).", "",
           "```text", usage, "", (parser.description or "").strip(), "```", ""]
    for group in parser._action_groups:
        rows = flag_table(parser, group)
        if rows:
            out += [f"## {group.title}", "", *rows, ""]
    return "\n".join(out)


def cli_pages() -> dict[str, str]:
    """``{path under docs/: Markdown}`` for the index and every subcommand's page."""
    from bt_lstm.cli import COMMANDS, usage

    index = ["# CLI reference", "",
             "Every subcommand of `bt-lstm`, with every flag, its default and its help, "
             "generated from the argparse parsers when the site is built. "
             "`python runners/<command>.py` takes the same flags (`runners/train_dqn.py` is "
             "`dqn`).", "", "```text", usage(), "```", "", "| command | what it does |",
             "|---|---|"]
    pages = {}
    for name, (module, line) in COMMANDS.items():
        pages[f"reference/cli/{name}.md"] = command_page(name, module, line)
        index.append(f"| [`{name}`]({name}.md) | {_cell(line)} |")
    pages["reference/cli/index.md"] = "\n".join(index) + "\n"
    return pages


if __name__ == "__main__":
    from bt_lstm.cli import COMMANDS

    wanted = sys.argv[1:] or list(COMMANDS)
    for cmd in wanted:
        print(command_page(cmd, *COMMANDS[cmd]))
