"""The generated leaderboard site in a real browser: headless Chromium driven by Playwright.

A site is generated from a sample of the committed records (three defenses on mnist5k / resnet, with their figures),
served on localhost, and then: clicking a column header re-orders the headline table, the search box filters it,
every link of every page resolves, and every figure loads. Chromium comes from the system's packages (Debian's
``chromium``, which `.ci/run` installs); where it or Playwright is missing the test says so and skips.
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DEFENSES = ("none", "feature-squeezing", "pixeldefend")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def served_site(tmp_path_factory):
    """A site of the sample records, served over HTTP from a folder laid out as the repository is."""
    from benchmark.report.site import write_site

    root = tmp_path_factory.mktemp("site")
    source = ROOT / "results"
    taken = 0
    for path in sorted((source / "records" / "mnist5k").glob("*.json")):
        config = json.loads(path.read_text())["config"]
        if config["model"] == "resnet" and config["defense"] in DEFENSES:
            target = root / "results" / "records" / "mnist5k" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
            taken += 1
    assert taken > 10, "the sample needs the committed mnist5k records"
    (root / "results" / "figures").mkdir(parents=True)
    for figure in (source / "figures").glob("mnist5k_resnet_*.png"):
        shutil.copy(figure, root / "results" / "figures" / figure.name)
    write_site(root / "results", root / "leaderboard")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/leaderboard/index.html"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                     "(pip install playwright; .ci/run installs it)")
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    with playwright.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        except Exception as exc:  # a browser that cannot start here: say why, let the rest of CI run
            pytest.skip(f"Chromium at {CHROMIUM} did not start: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


def defenses_in_order(page) -> list[str]:
    return page.eval_on_selector_all("table.sortable tbody tr", "rows => rows.map(r => r.cells[0].innerText.trim())")


def test_headers_sort_and_search_filters(browser, served_site):
    page = browser.new_page()
    page.goto(served_site)
    before = defenses_in_order(page)
    assert set(before) >= set(DEFENSES)
    page.click("table.sortable th:has-text('defense')")
    after = defenses_in_order(page)
    assert after == sorted(before) and after != before
    page.click("table.sortable th:has-text('defense')")
    assert defenses_in_order(page) == sorted(before, reverse=True)
    page.fill("input.search", "pixel")
    visible = page.eval_on_selector_all("table.sortable tbody tr", "rows => rows.filter(r => r.style.display !== "
                                        "'none').map(r => r.cells[0].innerText.trim())")
    assert visible == ["pixeldefend"]


def test_every_link_resolves_and_every_figure_loads(browser, served_site):
    page = browser.new_page()
    todo, seen, images = [served_site], set(), 0
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        response = page.goto(url)
        assert response is not None and response.ok, f"{url} did not load"
        if not url.endswith(".html"):
            continue
        page.wait_for_load_state("load")
        broken = page.eval_on_selector_all("img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0))"
                                                  ".map(i => i.getAttribute('src'))")
        assert broken == [], f"figures that did not load on {url}: {broken}"
        images += page.eval_on_selector_all("img", "imgs => imgs.length")
        for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))"):
            target = urldefrag(urljoin(url, href))[0]
            if target.startswith("http://127.0.0.1"):
                todo.append(target)
    assert any(u.endswith(".json") for u in seen), "record links were followed"
    assert images > 0, "the pages show figures"
