"""The documentation site builds strictly (a warning fails it), its generated CLI reference holds
every flag of every command, and its pages render in headless Chromium with every picture
loaded and every navigation link pointing at a page of the built site. The README stays a
short front page whose test command is what CI runs."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, chromium_evaluate, need_chromium

from bt_lstm.cli import COMMANDS

INSTALL = 'pip install torch==2.13.0 && pip install -e ".[test,freqtrade]" && python -m pytest -q'
MAIN_JOB = ("pip install torch==2.13.0 && pip install -e . && "
            "python runners/backtest.py --symbol BTCUSDT")


def mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site`` (the tree's code on the path)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(config), "-d", str(site)], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=300)


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocstrings", reason="the [docs] packages are not installed")
    out = tmp_path_factory.mktemp("site") / "site"
    res = mkdocs(REPO / "mkdocs.yml", out)
    assert res.returncode == 0, res.stderr[-3000:]
    warnings = [line for line in res.stderr.splitlines() if "WARNING" in line]
    assert not warnings, warnings
    return out


def test_site_builds_strictly_with_every_page(site):
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert cfg["strict"] is True and cfg["theme"]["font"] is False  # offline: no web fonts
    for page in ("index", "getting-started", "benchmarks", "ARCHITECTURE", "RELIABILITY",
                 "freqtrade", "reference/cli/index", "reference/api/index"):
        assert (site / f"{page}.html").is_file(), page
    for name in COMMANDS:
        assert (site / "reference" / "cli" / f"{name}.html").is_file(), name
    # nothing in the built site loads from the internet (fonts, scripts, styles)
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis" not in text, page
        assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', text), page


def test_cli_reference_holds_every_flag_default_and_help_of_every_command(site):
    import argparse
    import html
    import importlib

    for name, (module, _) in COMMANDS.items():
        page = (site / "reference" / "cli" / f"{name}.html").read_text()
        text = html.unescape(re.sub(r"<[^>]+>", "", page)).replace("\\", "")
        text = " ".join(text.split())
        parser = importlib.import_module(f"bt_lstm.cli.{module}").build_parser(
            prog=f"bt-lstm {name}")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"<code>{option}</code>" in page, (name, option)
            words = re.sub(r"\s*\(default:?[^()]*\)\s*$", "", action.help or "").split()[:4]
            assert " ".join(words).replace("%%", "%").replace("`", "") in text, (name, words)
    lookback = (site / "reference" / "cli" / "backtest.html").read_text()
    assert re.search(r"<code>--lookback</code></td>\s*<td><code>N</code></td>\s*"
                     r"<td><code>32</code></td>", lookback)  # the config's default


def test_a_warning_fails_the_build_with_the_sites_own_settings(tmp_path):
    """A page with a broken link: the strict build of mkdocs.yml's validation settings fails."""
    yaml = pytest.importorskip("yaml")
    ours = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# t\n\n[gone](missing.md)\n")
    cfg = {"site_name": "t", "docs_dir": "docs", "strict": ours["strict"],
           "validation": ours.get("validation", {})}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(cfg))
    res = mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert res.returncode != 0 and "missing.md" in res.stderr, res.stderr[-2000:]


CHECK_PAGE = """
(async () => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(img => img.complete ? null :
      new Promise(ok => { img.onload = ok; img.onerror = ok; })));
  return JSON.stringify({
    images: imgs.map(img => ({src: img.src, complete: img.complete,
                              width: img.naturalWidth})),
    nav: [...document.querySelectorAll('nav.md-nav a.md-nav__link[href], .md-tabs a[href]')]
        .map(a => a.href),
    code: [...document.querySelectorAll('pre code')].map(c => c.textContent.length),
  });
})()
"""


def chromium_page(page: Path, profile: Path) -> dict:
    """``page`` in headless Chromium: its images (loaded or broken), its navigation links and
    its code blocks' sizes."""
    return chromium_evaluate(page, profile, CHECK_PAGE)


@pytest.mark.parametrize("page", ["getting-started.html", "guides/backtest.html"])
def test_page_renders_with_pictures_loaded_and_navigation_resolving(site, page, tmp_path):
    need_chromium()
    got = chromium_page(site / page, tmp_path / "profile")
    if page == "getting-started.html":
        assert len(got["images"]) >= 4, got["images"]  # the report's screenshots
    for img in got["images"]:
        assert img["complete"] and img["width"] > 0, img  # loaded, not broken
    assert len(got["nav"]) >= 20, got["nav"]
    for href in got["nav"]:
        url = urllib.parse.urlsplit(href)
        assert url.scheme == "file", href  # no link leaves the site
        target = Path(urllib.parse.unquote(url.path))
        assert target.is_file() and target.resolve().is_relative_to(site.resolve()), href
    assert max(got["code"]) > 500, got["code"]  # the worked example's output is in the page


def test_readme_is_a_short_front_page_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert f"\n{MAIN_JOB}\n" in readme and f"\n{INSTALL}\n" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == INSTALL  # CI runs the README's test command
    for name in COMMANDS:
        assert f"| `bt-lstm {name}` |" in readme, name
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert pictures, "the README shows a picture of a report"
    for pic in pictures:
        path = REPO / pic
        assert path.is_file() and path.stat().st_size < 500_000, pic
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), link


def test_every_worked_example_was_made_by_its_generator():
    sys.path.insert(0, str(REPO / "docs"))
    try:
        from gen_examples import EXAMPLES
    finally:
        sys.path.remove(str(REPO / "docs"))
    pages = "\n".join(p.read_text() for p in (REPO / "docs").rglob("*.md"))
    included = set(re.findall(r'--8<-- "([^"]+)"', pages))
    assert included == {f"{name}.txt" for name in EXAMPLES}
    for name in EXAMPLES:
        text = (REPO / "docs" / "examples" / f"{name}.txt").read_text()
        assert text.startswith(f"# made by `python docs/gen_examples.py {name}` on "), name
        assert "\n$ " in text and "(exit code" not in text, name
