"""The web playground, driven in real headless Chromium against a live server.

Chromium comes from ``conftest.py``. Every request the page makes is recorded and
must go to the public API, the playground's own assets or the served files.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from reel.media.video import probe_video
from support.server import LiveServer, create_key

pytestmark = pytest.mark.e2e

DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "playground.png"
"""Rewritten only with REEL_UPDATE_SCREENSHOT=1, so a test run leaves the checkout clean."""
PUBLIC_PATHS = re.compile(r"^/($|static/[\w.-]+$|api/v3/|files/)")
GENERATION_TIMEOUT_MS = 60_000


def scene_png(width: int = 1200, height: int = 800) -> bytes:
    """A small landscape (sky, sun, hills, lake) so the screenshot shows a real-looking crop."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line([(0, y), (width, y)], fill=(int(255 - 120 * t), int(150 + 40 * t), int(110 + 120 * t)))
    draw.ellipse([width * 0.62, height * 0.16, width * 0.78, height * 0.40], fill=(255, 226, 150))
    draw.polygon(
        [(0, height * 0.62), (width * 0.25, height * 0.36), (width * 0.5, height * 0.6), (0, height)],
        fill=(74, 86, 120),
    )
    draw.polygon(
        [
            (width * 0.3, height * 0.66),
            (width * 0.68, height * 0.42),
            (width, height * 0.64),
            (width, height),
        ],
        fill=(58, 70, 104),
    )
    draw.rectangle([0, height * 0.7, width, height], fill=(44, 98, 140))
    for i in range(14):
        y = int(height * (0.73 + i * 0.019))
        draw.line([(width * 0.55 + i * 9, y), (width * 0.85 - i * 7, y)], fill=(250, 210, 150), width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def page(browser: Browser, server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    page = context.new_page()
    problems: list[str] = []
    requested: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # A 4xx from the API is logged by Chromium as a failed resource; the page handles those.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("request", lambda request: requested.append(request.url))
    yield page
    context.close()
    assert not problems, "\n".join(problems)  # CSP violations and script errors land here
    origin = urlsplit(server.url).netloc
    for url in requested:
        parts = urlsplit(url)
        if parts.scheme in ("blob", "data"):
            continue
        assert parts.netloc == origin, f"the page called another host: {url}"
        assert PUBLIC_PATHS.match(parts.path), f"the page called a non-public path: {url}"


@pytest.fixture(scope="module")
def playground_key(server: LiveServer) -> str:
    """A key of its own, so the history (and the screenshot) shows only this module's predictions."""
    return create_key(server.data_dir, "playground")


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    path = tmp_path / "lake.png"
    path.write_bytes(scene_png())
    return path


def uploaded_url(server: LiveServer, key: str) -> str:
    """An image already on the server (its download_url), to enter in the URL field."""
    answer = httpx.post(
        f"{server.url}/api/v3/media/upload/binary",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("lake.png", scene_png(640, 480), "image/png")},
    )
    return str(answer.json()["data"]["download_url"])


def record_statuses(page: Page) -> None:
    """Keep every text the status line shows, so a test can see the progress it went through."""
    page.evaluate(
        """() => {
          window.seenStatuses = [];
          const status = document.getElementById("status");
          new MutationObserver(() => window.seenStatuses.push(status.textContent))
            .observe(status, { childList: true, characterData: true, subtree: true });
        }"""
    )


def tab_to(page: Page, selector: str, limit: int = 40) -> None:
    """Press Tab until ``selector`` has the focus: the control is reachable by keyboard alone."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement === document.querySelector(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} was not reached with Tab")


def test_a_bad_key_shows_the_servers_message(page: Page, scene: Path) -> None:
    page.goto("/")
    page.fill("#key", "rk_000000000000_not-a-real-key")
    page.keyboard.press("Tab")
    expect(page.locator("#history")).to_contain_text("Could not load the history: invalid API key")
    page.set_input_files("#file", str(scene))
    page.fill("#prompt", "anything")
    page.click("#submit")
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("invalid API key: check the 'Authorization: Bearer <key>' header")
    expect(page.locator("#status")).to_have_text("Not submitted.")
    expect(page.locator("#submit")).to_be_enabled()


def test_keyboard_only_submission_and_a_failed_prediction(
    page: Page, server: LiveServer, playground_key: str
) -> None:
    image_url = uploaded_url(server, playground_key)
    page.goto("/")
    tab_to(page, "#key")
    page.keyboard.type(playground_key)
    tab_to(page, "#file")  # the file picker is reachable too, its label showing the focus
    assert page.evaluate("getComputedStyle(document.querySelector('label[for=file]')).outlineStyle") != "none"
    tab_to(page, "#image-url")
    page.keyboard.type(image_url)
    tab_to(page, "#prompt")
    page.keyboard.type("[sandbox:fail] a pan that will not finish")
    tab_to(page, "input[name=ratio]:checked")
    page.keyboard.press("ArrowRight")  # auto → 16:9
    page.keyboard.press("ArrowRight")  # → 9:16
    assert page.evaluate("document.querySelector('input[name=ratio]:checked').value") == "9:16"
    expect(page.locator("#preview-caption")).to_contain_text("Output 720 × 1280")
    tab_to(page, "#submit")
    # The focused control is visibly marked.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(
        "Generation failed: sandbox: failure requested by the prompt tag [sandbox:fail]",
        timeout=GENERATION_TIMEOUT_MS,
    )
    expect(page.locator("#status")).to_contain_text("Failed.")
    prediction_id = re.search(r"\((\w+)\)", page.inner_text("#status"))
    assert prediction_id is not None
    item = page.locator(".history-item", has_text=prediction_id.group(1))
    expect(item.locator(".badge")).to_have_text("failed")
    expect(item.locator(".error-text")).to_contain_text("failure requested by the prompt tag")
    expect(item.locator(".thumb img")).to_have_attribute("src", image_url)  # the input as thumbnail


def test_cancel_stops_a_running_prediction(page: Page, server: LiveServer, playground_key: str) -> None:
    image_url = uploaded_url(server, playground_key)
    page.goto("/")
    page.fill("#key", playground_key)
    page.fill("#image-url", image_url)
    page.fill("#prompt", "[sandbox:delay=60] a very slow dolly")
    page.click("#submit")
    expect(page.locator("#cancel")).to_be_enabled(timeout=15_000)
    prediction_id = re.search(r"\((\w+)\)", page.inner_text("#status"))
    assert prediction_id is not None
    page.click("#cancel")
    expect(page.locator("#status")).to_contain_text("Cancelled.", timeout=10_000)
    expect(page.locator("#cancel")).to_be_disabled()
    answer = httpx.get(
        f"{server.url}/api/v3/predictions/{prediction_id.group(1)}/result",
        headers={"Authorization": f"Bearer {playground_key}"},
    )
    assert answer.json()["data"]["status"] == "cancelled"
    expect(page.locator(".history-item", has_text=prediction_id.group(1)).locator(".badge")).to_have_text(
        "cancelled"
    )


def test_drop_an_image_refuse_other_types_and_forget_the_key(page: Page, playground_key: str) -> None:
    page.goto("/")
    page.fill("#key", playground_key)
    page.keyboard.press("Tab")
    # Drop a 9:16 PNG on the drop zone, as a file dragged from the desktop would arrive.
    portrait = scene_png(360, 640)
    dropped = page.evaluate_handle(
        """(bytes) => {
          const data = new DataTransfer();
          data.items.add(new File([new Uint8Array(bytes)], "portrait.png", { type: "image/png" }));
          return data;
        }""",
        list(portrait),
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dropped})
    expect(page.locator("#image-status")).to_contain_text("portrait.png")
    expect(page.locator("#auto-ratio")).to_have_text("→ 9:16")
    expect(page.locator("#preview-image")).to_be_visible()

    gif = page.evaluate_handle(
        """() => {
          const data = new DataTransfer();
          data.items.add(new File(["GIF89a"], "anim.gif", { type: "image/gif" }));
          return data;
        }"""
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": gif})
    expect(page.get_by_role("alert")).to_contain_text("anim.gif is image/gif; use PNG, JPEG or WebP")
    expect(page.locator("#image-status")).to_contain_text("portrait.png")  # the previous choice stays

    page.click("#forget-key")
    assert page.evaluate("localStorage.getItem('reel.apiKey')") is None
    expect(page.locator("#key")).to_have_value("")
    page.reload()
    expect(page.locator("#key")).to_have_value("")


def test_a_full_generation_from_a_local_file_plays_in_the_page(
    page: Page, server: LiveServer, playground_key: str, scene: Path
) -> None:
    page.goto("/")
    expect(page.locator("#model option", has_text="(sandbox — not AI)").first).to_be_attached()
    expect(page.locator("#model-note")).to_contain_text("not AI generation")
    page.fill("#key", playground_key)
    page.keyboard.press("Tab")
    assert page.evaluate("localStorage.getItem('reel.apiKey')") == playground_key

    page.set_input_files("#file", str(scene))
    expect(page.locator("#image-status")).to_contain_text("lake.png")
    expect(page.locator("#auto-ratio")).to_have_text("→ 4:3")  # 1200×800 is closest to 4:3
    page.locator("label.ratio", has_text="16:9").click()
    expect(page.locator("#preview-caption")).to_contain_text("Output 1280 × 720 (16:9")
    # A 3:2 image is narrower than 16:9: the crop keeps its full width and 1200/(16/9)/800 of its height.
    crop = page.evaluate(
        "[document.getElementById('preview-crop').style.width, "
        "document.getElementById('preview-crop').style.height]"
    )
    assert crop[0] == "100%" and abs(float(crop[1].rstrip("%")) - 84.375) < 0.01

    page.fill("#prompt", "a slow push-in over the lake at dusk")
    record_statuses(page)
    page.click("#submit")

    video = page.locator("#player video")
    expect(video).to_be_attached(timeout=GENERATION_TIMEOUT_MS)
    # It really plays: time advances, it is not paused, and it has the output size.
    page.wait_for_function(
        "() => { const v = document.querySelector('#player video');"
        " return v.readyState >= 2 && !v.paused && v.currentTime > 1; }",
        timeout=15_000,
    )
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [1280, 720]
    expect(page.locator("#progress")).to_have_js_property("value", 1)
    expect(page.locator("#status")).to_contain_text("Done")
    statuses: list[str] = page.evaluate("window.seenStatuses")
    assert any(re.search(r"Generating… ([1-9]\d?)%", s) for s in statuses), statuses
    assert any(s.startswith("Uploading") for s in statuses), statuses

    download = page.locator("#player a[download]")
    expect(download).to_have_text("Download MP4")
    href = download.get_attribute("href")
    assert href is not None and href == video.get_attribute("src")
    prediction_id = re.search(r"\((\w+)\)", page.inner_text("#status"))
    assert prediction_id is not None

    # The history shows it, completed, with a frame of the video as its thumbnail.
    item = page.locator(".history-item", has_text=prediction_id.group(1))
    expect(item.locator(".badge")).to_have_text("completed")
    expect(item.locator(".thumb video")).to_have_js_property("readyState", 4, timeout=10_000)

    page.wait_for_function("() => document.querySelector('#player video').currentTime > 2.5")
    page.evaluate("window.scrollTo(0, 0)")
    page.evaluate("document.activeElement.blur()")  # the result, not a focus ring, should draw the eye
    shot = DOCS_SCREENSHOT if os.environ.get("REEL_UPDATE_SCREENSHOT") == "1" else scene.with_name("page.png")
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 800  # a real render of the page, not an empty capture

    # What played is what the server generated: an H.264 MP4 of the chosen size.
    saved = scene.with_name("out.mp4")
    saved.write_bytes(httpx.get(href).content)
    info = probe_video(saved)
    assert (info.width, info.height, info.codec) == (1280, 720, "h264")


def test_without_an_image_the_page_makes_a_text_to_video_clip(
    page: Page, server: LiveServer, playground_key: str
) -> None:
    page.goto("/")
    page.fill("#key", playground_key)
    page.keyboard.press("Tab")
    expect(page.locator("#model option").first).to_be_attached()
    page.select_option("#model", "runwayml/gen4-turbo")  # an image-to-video id: its t2v twin is used
    page.locator("label.ratio", has_text="9:16").click()
    page.fill("#prompt", "a red kite over the sea")
    posted: list[str] = []
    page.on("request", lambda r: posted.append(urlsplit(r.url).path) if r.method == "POST" else None)
    page.click("#submit")
    video = page.locator("#player video")
    expect(video).to_be_attached(timeout=GENERATION_TIMEOUT_MS)
    page.wait_for_function(
        "() => { const v = document.querySelector('#player video'); return v.readyState >= 2; }",
        timeout=15_000,
    )
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [720, 1280]
    assert "/api/v3/wavespeed-ai/wan-2.2/t2v-5b-720p" in posted
    assert not any("upload" in path for path in posted)


def test_the_page_and_its_assets_are_served_with_types_csp_and_cache_headers(server: LiveServer) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    # Everything the page loads comes from this server: no CDN, no inline script.
    assert not re.search(r"""(src|href)=["']https?:""", page.text)
    assert re.findall(r"<script[^>]*>", page.text) == ['<script type="module" src="/static/app.js">']

    for name, content_type in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        asset = httpx.get(f"{server.url}/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"] == content_type
        etag = asset.headers["etag"]
        again = httpx.get(f"{server.url}/static/{name}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""

    head = httpx.head(f"{server.url}/")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(page.content)

    for path in ("/static/nope.js", "/static/..%2Freel.db", "/static/%2e%2e%2fpyproject.toml"):
        missing = httpx.get(f"{server.url}{path}")
        assert missing.status_code == 404, path
        assert missing.json()["data"] is None
