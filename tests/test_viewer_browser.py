"""`agentrl view` in a real browser: the served app (uvicorn in a subprocess, as a user starts it)
driven by headless Chromium through playwright.

Every page loads without console errors, the curves render, the filter form changes the rows,
hostile stored text renders literally without running, and the viewer keeps answering (with
growing counts) while another process writes episodes into the database.

    make test-browser        # installs playwright and the viewer extra, then pytest -m browser
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests.viewer_db import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser


pytest.importorskip("starlette", reason="the viewer extra is not installed: pip install 'agentrl[viewer]'")
pytest.importorskip("uvicorn", reason="the viewer extra is not installed: pip install 'agentrl[viewer]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make test-browser)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (make test-browser installs it)", allow_module_level=True)

from tests import viewer_db  # noqa: E402
from tests.conftest import ROOT  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("viewer-browser") / "runs.db"
    ids = viewer_db.build(path)
    with viewer_db.running_viewer(path) as base:
        yield base, path, ids


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watched:
    """A page with its console errors, uncaught exceptions and dialogs recorded."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on(
            "console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", self._dialog)

    def _dialog(self, d) -> None:
        self.dialogs.append(f"{d.type}: {d.message}")
        d.dismiss()

    def goto(self, url: str) -> None:
        r = self.page.goto(url, wait_until="load")
        assert r is not None and r.status == 200, (url, r and r.status)

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def watched(browser):
    w = Watched(browser)
    yield w
    w.close()


def _count(w: Watched) -> int:
    return int(w.page.locator("#match-count").text_content())


def test_every_page_loads_without_console_errors(server, watched):
    base, _, ids = server
    from agentrl.viewer.app import group_url

    pages = [
        "/",
        f"/run/{ids['run']}",
        f"/run/{ids['eval_run']}",
        f"/compare?run={ids['run']}&run={ids['eval_run']}",
        f"/run/{ids['run']}/episodes",
        f"/run/{ids['run']}/episodes?q=lantern&split=train",
        f"/episode/{ids['train'][1]}",
        f"/episode/{ids['xss']}",
        group_url(ids["run"], ids["first_group"]),
        group_url(ids["run"], ids["xss_group"]),
    ]
    for url in pages:
        watched.goto(base + url)
        assert watched.page.locator("h1").count() == 1, url
    assert watched.errors == [] and watched.dialogs == []


def test_curves_render(server, watched):
    base, _, ids = server
    for url in (f"/run/{ids['run']}", f"/compare?run={ids['run']}&run={ids['eval_run']}"):
        watched.goto(base + url)
        lines = watched.page.locator("svg.chart polyline.line")
        assert lines.count() >= 6
        points = lines.first.get_attribute("points")
        assert len(points.split()) >= 2  # a line through several iterations
        box = watched.page.locator("svg.chart").first.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 80
        assert watched.page.locator("svg.chart circle.marker").count() > 10
    assert watched.errors == []


def test_filters_change_the_rows(server, watched):
    base, _, ids = server
    page = watched.page
    watched.goto(f"{base}/run/{ids['run']}/episodes")
    everything = page.locator("tr.ep-row").count()
    assert everything == _count(watched) == 22
    page.select_option("select[name=outcome]", "won")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert "outcome=won" in page.url
    assert page.locator("tr.ep-row").count() == _count(watched) == 9
    page.select_option("select[name=split]", "eval")
    page.fill("input[name=q]", "lantern")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert page.locator("tr.ep-row").count() == 3
    assert page.locator("select[name=outcome]").input_value() == "won"  # the form keeps the filters
    with page.expect_navigation():
        page.click("text=clear")
    assert page.locator("tr.ep-row").count() == everything
    assert watched.errors == []


def test_hostile_text_renders_literally(server, watched):
    base, _, ids = server
    from agentrl.viewer.app import group_url

    page = watched.page
    watched.goto(f"{base}/episode/{ids['xss']}")
    assert page.locator("pre.obs").nth(1).text_content() == viewer_db.XSS_OBS  # [0] is the goal
    assert page.locator("code.action").first.text_content() == viewer_db.XSS_ACTION
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    page.click("button.copy")
    page.wait_for_function("document.querySelector('button.copy').textContent !== 'copy'")
    watched.goto(base + group_url(ids["run"], ids["xss_group"]))
    assert viewer_db.XSS_GROUP in page.locator("h1").text_content()
    watched.goto(base + "/")
    assert viewer_db.XSS_RUN in page.locator("table.runs").text_content()
    time.sleep(0.3)  # a dialog an injected script opened would have fired by now
    assert watched.dialogs == [] and watched.errors == []


def test_keeps_working_while_a_run_writes(server, watched):
    base, path, ids = server
    url = f"{base}/run/{ids['run']}/episodes?iteration=3"
    watched.goto(url)
    start = _count(watched)
    n = 40
    writer = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "viewer_db.py"), "write", str(path), str(ids["run"]), str(n), "0.05"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = [start]
    try:
        while writer.poll() is None:
            watched.goto(url)
            seen.append(_count(watched))
            watched.goto(f"{base}/run/{ids['run']}")
            time.sleep(0.05)
    finally:
        out = writer.communicate(timeout=120)[0]
    assert writer.returncode == 0, out
    watched.goto(url)
    seen.append(_count(watched))
    assert seen == sorted(seen), seen
    assert seen[-1] == start + n
    assert len(set(seen)) >= 3, f"the count did not grow while the writer ran: {seen}"
    latest = max(int(x) for x in re.findall(r"/episode/(\d+)", watched.page.content()))
    watched.goto(f"{base}/episode/{latest}")
    assert watched.errors == []
