"""The API reference pages: one page per subpackage of ``bt_lstm``, one mkdocstrings block per
public module in it (a module whose name starts with ``_`` is private and left out).

The module list is read from the source tree at build time (``docs/hooks.py``), so a new module
appears in the reference by itself; ruff's pydocstyle rules (D1) make sure what it shows has a
docstring.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bt_lstm"

# subpackage -> one line for the index (the order the data flows, as in ARCHITECTURE.md)
SECTIONS: dict[str, str] = {
    "config": "frozen dataclasses for every setting; JSON round trip; validation",
    "data": "candles (load + validate), the snapshot, downloaders, synthetic market, files",
    "signals": "features, regimes, windows: pure and causal",
    "trading": "the kernel every runner shares: signal, size, fill, commission",
    "models": "architectures and registry, training, bundles, the Forecaster, the skill guard",
    "rl": "the DQN trader: spec, Gymnasium environment, Q-networks, agent",
    "backtest": "Backtrader engine glue, return metrics, reports",
    "research": "pipeline, walk-forward, baselines, audit, truth, tuning, statistics",
    "live": "feed, engine, model server, paper broker, state, bus",
    "freqai": "the freqtrade / FreqAI adapter",
    "jobs": "one module per command that writes a run folder; the run manifest",
    "cli": "the `bt-lstm` command: flag registry and one module per subcommand",
}


def public_modules(sub: str) -> list[str]:
    """Dotted names of the public modules of ``bt_lstm.<sub>`` (the package first)."""
    path = PACKAGE / sub
    if not path.is_dir():
        return [f"bt_lstm.{sub}"] if (PACKAGE / f"{sub}.py").is_file() else []
    names = [f"bt_lstm.{sub}"]
    for py in sorted(path.rglob("*.py")):
        rel = py.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if any(p.startswith("_") for p in parts) or rel.name == "__main__":
            continue
        dotted = "bt_lstm." + ".".join(parts)
        if dotted not in names:
            names.append(dotted)
    return names


def api_pages() -> dict[str, str]:
    """``{path under docs/: Markdown}`` for the API index and one page per subpackage."""
    index = ["# API reference", "",
             "The library's public modules, from their docstrings (numpy style). Imports "
             "point one way (see [Architecture](../../ARCHITECTURE.md)); each page is one "
             "layer.", "", "| subpackage | what lives there |", "|---|---|"]
    pages = {}
    for sub, line in SECTIONS.items():
        modules = public_modules(sub)
        if not modules:
            continue
        blocks = [f"# bt_lstm.{sub}", "", f"{line[0].upper()}{line[1:]}.", ""]
        for dotted in modules:
            heading = "" if dotted == f"bt_lstm.{sub}" else "\n---\n"
            blocks += [heading, f"::: {dotted}", ""]
        pages[f"reference/api/{sub}.md"] = "\n".join(blocks)
        index.append(f"| [`bt_lstm.{sub}`]({sub}.md) | {line} |")
    pages["reference/api/index.md"] = "\n".join(index) + "\n"
    return pages
