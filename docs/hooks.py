"""MkDocs hooks: the generated pages (CLI reference, API reference, benchmarks) and their nav.

The pages are made in memory at every build from the code and the committed benchmark JSON
(``gen_cli.py``, ``gen_api.py``, ``gen_benchmarks.py`` beside this file), never written into
``docs/``, so they cannot drift from ``--help``, the docstrings or the measurements. The repository
root goes first on ``sys.path``, so the site documents the checkout it is built from.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _path in (str(HERE), str(HERE.parent)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from gen_api import api_pages  # noqa: E402
from gen_benchmarks import benchmark_page  # noqa: E402
from gen_cli import cli_pages  # noqa: E402

_PAGES: dict[str, str] = {}


def _generate() -> dict[str, str]:
    """Every generated page, ``{path under docs/: Markdown}``, made afresh."""
    pages = {**cli_pages(), **api_pages()}
    pages["benchmarks.md"] = benchmark_page()
    return pages


def _expand(nav: list, pages: dict[str, str]) -> list:
    """Replace a nav entry pointing at a generated index with a section of all its pages."""
    out = []
    for entry in nav:
        if isinstance(entry, dict):
            (title, target), = entry.items()
            if isinstance(target, list):
                out.append({title: _expand(target, pages)})
                continue
            if isinstance(target, str) and target.startswith("reference/") \
                    and target.endswith("/index.md") and target in pages:
                folder = target[: -len("index.md")]
                children = [{"Overview": target}] + [
                    {_title(path, pages[path]): path} for path in pages
                    if path.startswith(folder) and path != target]
                out.append({title: children})
                continue
        out.append(entry)
    return out


def _title(path: str, text: str) -> str:
    first = text.lstrip().splitlines()[0]
    return first.lstrip("# ").strip() if first.startswith("#") else Path(path).stem


def on_config(config, **kwargs):
    """Expand the generated sections of the nav (one entry per command, per subpackage)."""
    _PAGES.clear()
    _PAGES.update(_generate())
    if config.nav:
        config.nav = _expand(config.nav, _PAGES)
    return config


def on_files(files, config, **kwargs):
    """Add the generated pages to the site's files."""
    from mkdocs.structure.files import File

    for path, text in _PAGES.items():
        files.append(File.generated(config, path, content=text))
    return files
