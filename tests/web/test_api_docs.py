"""``/docs``, the API reference, rendered by real headless Chromium against a live server.

Swagger UI must render every operation of ``/openapi.json`` from the package's own files, under
the page's Content-Security-Policy (a violation is a console error, which fails the test), and
call nothing but this server. The screenshot in docs/ is taken here: ``REEL_UPDATE_SCREENSHOT=1``
rewrites ``docs/api-docs.png``; a plain run writes to a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, expect

from support.server import LiveServer

pytestmark = pytest.mark.e2e

DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "api-docs.png"


def test_docs_renders_every_operation_with_its_examples_under_the_csp(
    browser: Browser, server: LiveServer, tmp_path: Path
) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    operations = sum(len(item) for item in document["paths"].values())

    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    page = context.new_page()
    problems: list[str] = []
    requested: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("request", lambda request: requested.append(request.url))

    # Reached from the playground, as a user would.
    page.goto("/")
    page.get_by_role("link", name="API reference").click()
    page.wait_for_url("**/docs")
    expect(page.locator(".opblock[id^='operations-']")).to_have_count(operations, timeout=30_000)
    expect(page.locator(".info .title")).to_contain_text("Reel")

    # One model's own operation, opened: its input schema's example is there to copy.
    submit = page.locator("#operations-submit-submit_runwayml_gen4_turbo")
    submit.locator(".opblock-summary").click()
    expect(submit.locator(".body-param__example, .microlight").first).to_contain_text("a slow push-in")
    expect(submit.locator(".responses-table")).to_contain_text("429")

    page.evaluate("window.scrollTo(0, 0)")
    shot = DOCS_SCREENSHOT if os.environ.get("REEL_UPDATE_SCREENSHOT") == "1" else tmp_path / "api-docs.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1000  # a real render, not an empty capture
    context.close()

    assert not problems, "\n".join(problems)  # CSP violations and script errors land here
    origin = urlsplit(server.url).netloc
    for url in requested:
        parts = urlsplit(url)
        if parts.scheme in ("blob", "data"):
            continue
        assert parts.netloc == origin, f"the docs page called another host: {url}"
