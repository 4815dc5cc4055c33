"""The rendered book, checked in a real browser as a reader meets it.

`bash scripts/test.sh` builds the book first and points ``DISTILL_BOOK_HTML``
at it; a plain ``pytest tests`` skips this module. The browser is Debian's
headless Chromium driven by Selenium through Debian's chromedriver (paths
overridable with ``DISTILL_CHROMIUM`` and ``DISTILL_CHROMEDRIVER``); the
pages come from a local HTTP server on 127.0.0.1 started here.

A screenshot of one chapter, with math, a figure and the launch button in
view, is kept in ``DISTILL_TEST_ARTIFACTS`` (default ``_build/test-artifacts``).
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.test_book import CHAPTERS, CONFIG, ROOT

BOOK_HTML = os.environ.get("DISTILL_BOOK_HTML")
pytestmark = pytest.mark.skipif(
    not BOOK_HTML, reason="bash scripts/test.sh builds the book and sets DISTILL_BOOK_HTML")

CHROMIUM = os.environ.get("DISTILL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DISTILL_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("DISTILL_TEST_ARTIFACTS", ROOT / "_build" / "test-artifacts"))
SCREENSHOT_CHAPTER = "notebooks/07_beyond_pixels"


#: Where ``scripts/test.sh`` writes the exit status of the book build it runs
#: alongside the tests; this module waits for it (at most ``BOOK_WAIT_SECONDS``).
BOOK_STATUS = os.environ.get("DISTILL_BOOK_STATUS")
BOOK_WAIT_SECONDS = 3600


@pytest.fixture(scope="module")
def site() -> Path:
    if BOOK_STATUS:
        status = Path(BOOK_STATUS)
        deadline = time.monotonic() + BOOK_WAIT_SECONDS
        while not status.exists():
            assert time.monotonic() < deadline, f"the book build wrote no {status} in time"
            time.sleep(2)
        assert status.read_text().strip() == "0", (
            f"the book build failed (exit status {status.read_text().strip()}): see its log "
            "beside the status file")
    site = Path(BOOK_HTML).resolve()
    assert (site / "index.html").is_file(), f"no built book in {site}: run bash scripts/build_book.sh"
    return site


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for program in (CHROMIUM, CHROMEDRIVER):
        assert Path(program).is_file(), (
            f"{program} is missing: scripts/test.sh installs Debian's chromium and "
            f"chromium-driver (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="distill-chromium-")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,1400",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(120)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(browser, server, chapter: str) -> None:
    """Load a chapter and wait until MathJax has typeset it."""
    browser.get(f"{server}/{chapter}.html")
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const started = Date.now();
        const wait = () => {
            if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
                MathJax.startup.promise.then(() => done("typeset"), e => done("failed: " + e));
            } else if (document.readyState === "complete" && !document.querySelector(".math")) {
                done("no math");
            } else if (document.readyState === "complete" && Date.now() - started > 30000) {
                done("MathJax never started");
            } else {
                setTimeout(wait, 100);
            }
        };
        wait();
    """)
    assert status in ("typeset", "no math"), f"{chapter}: {status}"


def _chapter_makes_figures(chapter: str) -> bool:
    source = (ROOT / f"{chapter}.md").read_text()
    return "plt." in source or "plotting.plot" in source


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_loads_with_math_figures_and_links(browser, server, chapter):
    _open(browser, server, chapter)
    page = browser.execute_script("""
        const math = [...document.querySelectorAll("article .math")];
        const figures = [...document.querySelectorAll("article .cell_output img")];
        const links = [...document.querySelectorAll("a[href]")].map(a => a.href);
        return {
            title: document.querySelector("article h1")?.textContent ?? "",
            math: math.length,
            typeset: math.filter(m => m.querySelector("mjx-container")).length,
            raw_tex: math.filter(m => !m.querySelector("mjx-container"))
                         .map(m => m.textContent.slice(0, 80)),
            figures: figures.map(img => ({
                src: img.getAttribute("src"), complete: img.complete,
                width: img.naturalWidth, height: img.naturalHeight,
                caption: img.closest("figure")?.querySelector("figcaption")?.textContent ?? "",
            })),
            links: links,
        };
    """)
    assert page["title"].strip(), f"{chapter}: no title; did the page load?"
    # Math: every math element of the page is typeset by MathJax (served
    # offline from _static, so no network is needed).
    assert page["math"] > 0, f"{chapter}: no math on the page"
    assert page["typeset"] == page["math"], f"{chapter}: raw TeX left: {page['raw_tex'][:3]}"
    # Figures: the cells' images are there, loaded, non-empty and captioned.
    if _chapter_makes_figures(chapter):
        assert page["figures"], f"{chapter}: the chapter plots, but the page shows no figure"
    for figure in page["figures"]:
        assert figure["complete"] and figure["width"] > 50 and figure["height"] > 50, figure
        assert figure["caption"].strip(), f"{chapter}: a figure without a caption: {figure}"
    # Launch button: Colab opens this chapter's committed .ipynb on GitHub.
    repository = urllib.parse.urlparse(CONFIG["repository"]["url"]).path.strip("/")
    branch = CONFIG["repository"]["branch"]
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    expected = f"{colab}/github/{repository}/blob/{branch}/{chapter}.ipynb"
    colab_links = [link for link in page["links"] if link.startswith(colab)]
    assert colab_links == [expected], colab_links
    assert _is_committed(f"{chapter}.ipynb")
    # Source: a link to this chapter's file in the repository.
    source = f"{CONFIG['repository']['url']}/blob/{branch}/{chapter}."
    assert any(link.startswith(source) for link in page["links"]), f"{chapter}: no source link"


def _is_committed(path: str) -> bool:
    listed = subprocess.run(["git", "ls-files", "--error-unmatch", path], cwd=ROOT,
                            capture_output=True, text=True)
    return listed.returncode == 0


def test_screenshot_of_a_chapter_shows_math_a_figure_and_the_launch_button(browser, server):
    _open(browser, server, SCREENSHOT_CHAPTER)
    # Bring the first figure to the middle of the window; the header with the
    # launch button stays at the top, and the paragraphs before the figure
    # hold math.
    visible = browser.execute_script("""
        const figure = document.querySelector("article .cell_output img");
        figure.scrollIntoView({block: "center"});
        const inView = element => {
            const box = element.getBoundingClientRect();
            return box.bottom > 0 && box.top < window.innerHeight && box.width > 0;
        };
        const launch = document.querySelector(".dropdown-launch-buttons button");
        return {
            figure: inView(figure),
            launch: launch !== null && inView(launch),
            math: [...document.querySelectorAll("article mjx-container")].some(inView),
        };
    """)
    assert visible == {"figure": True, "launch": True, "math": True}, visible
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{Path(SCREENSHOT_CHAPTER).name}.png"
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("id", "name"):
            if attrs.get(name):
                self.ids.add(attrs[name])
        for name in ("href", "src"):
            if attrs.get(name):
                self.links.append(attrs[name])


def test_no_internal_link_is_broken(site):
    pages = {}
    for page in site.rglob("*.html"):
        if "_static" in page.relative_to(site).parts:
            continue
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        pages[page.resolve()] = parser
    assert len(pages) > len(CHAPTERS)
    broken = []
    for page, parser in pages.items():
        for link in parser.links:
            parts = urllib.parse.urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / urllib.parse.unquote(parts.path)).resolve() \
                if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link}")
            elif parts.fragment and target in pages and parts.fragment not in pages[target].ids:
                broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert not broken, "\n".join(broken[:20])


def test_bibliography_lists_the_works_the_book_builds_on(browser, server):
    browser.get(f"{server}/book/bibliography.html")
    entries = browser.execute_script(
        "return [...document.querySelectorAll('article .citation, article dd, article li')]"
        ".map(e => e.textContent)")
    text = " ".join(entries)
    # Unrolled hypergradients, dataset distillation, implicit differentiation.
    for author in ("Maclaurin", "Wang", "Blondel"):
        assert author in text, f"the bibliography has no entry by {author}"
