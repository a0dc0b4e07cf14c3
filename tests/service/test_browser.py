"""The web page in a real headless browser (Debian's chromium driven by Playwright; no browser download).

It types a query, uploads an image (file picker and drag and drop), checks the results and
thumbnails, filters by source, sees the page follow a switch, and saves screenshots. Set
DOCS_SCREENSHOT=1 to also refresh docs/img/web-page.png and web-page-images.png.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import EXAMPLES, REPO, make_client
from .procs import require_binary
from servers import free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def base_url(published: Any) -> Iterator[str]:
    """The app on a real uvicorn server (in a thread of this process, sharing the loaded models)."""
    import uvicorn

    app = make_client(published).app
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the service did not become ready"
        time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_binary(CHROMIUM, "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def drop_file(page: Any, path: Path, mime: str) -> None:
    """Drop a file onto the search panel the way a user's drag and drop does (a DataTransfer with a File)."""
    page.evaluate(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: mime }));
            const zone = document.getElementById("drop-zone");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
            }
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name, mime],
    )


def test_search_page_text_and_image_search_in_a_real_browser(browser: Any, base_url: str, published: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a shared 2-core machine: a search can take a few seconds

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(base_url + "/")

    expect(page.locator("#live-text")).to_have_text("live: v1")
    row = page.locator("#release-rows tr[data-release='v1']")
    expect(row).to_contain_text("live")
    expect(row.locator("td.num").first).to_have_text("13")  # 4 text files + 9 images

    # Text search: type, press Enter, read the results.
    page.fill("#q", "how do I connect to the VPN from home")
    page.press("#q", "Enter")
    first = page.locator(".result").first
    expect(first).to_contain_text("it/vpn-setup.md")
    expect(first.locator(".heading")).to_contain_text("VPN Setup")
    assert page.locator(".result mark").count() > 0  # query words highlighted in the snippets
    expect(page.locator("#summary")).to_contain_text("from release v1")
    # Results under the relevance floor are folded, dimmed, and counted in the summary.
    scores = [h["score"] for h in httpx.get(f"{base_url}/api/v1/search", params={"q": "how do I connect to the VPN from home", "k": 10}).json()["hits"]]
    weak = sum(s < 0.25 for s in scores)
    assert page.locator(".weak .result").count() == weak
    assert page.locator("#results > .result").count() == len(scores) - weak
    if weak:
        expect(page.locator("#summary")).to_contain_text(f"{weak} below the relevance floor 0.25, folded")
        assert not page.locator(".weak .result").first.is_visible()  # folded until opened
    page.screenshot(path=str(tmp_path / "web-page-text.png"), full_page=True)
    if os.environ.get("DOCS_SCREENSHOT") == "1":
        page.screenshot(path=str(REPO / "docs" / "img" / "web-page.png"), full_page=False)

    # Source filter: the docs source only.
    page.select_option("#source", "docs")
    expect(page.locator(".result .badge").first).to_have_text("docs")

    # Image search through the file picker: the same image comes first, with its thumbnail.
    stripes = EXAMPLES / "images" / "stripes" / "stripes-01.png"
    page.set_input_files("#file", str(stripes))
    tile = page.locator(".tile").first
    expect(tile).to_contain_text("stripes-01.png")
    expect(page.locator("#image-chip")).to_be_visible()
    page.wait_for_function("() => [...document.querySelectorAll('.tile img')].every((img) => img.complete && img.naturalWidth > 0)")
    assert page.locator(".tile").count() == 9 or page.locator(".tile").count() == 10  # k=10, 9 images in the release
    page.screenshot(path=str(tmp_path / "web-page-images.png"), full_page=True)

    # Drag and drop another image onto the panel.
    checker = EXAMPLES / "images" / "checkerboard" / "checker-02.png"
    drop_file(page, checker, "image/png")
    expect(page.locator(".tile").first).to_contain_text("checker-02.png")

    # Dropping something that is not an image is refused on the page, with a message.
    drop_file(page, EXAMPLES / "text" / "it" / "vpn-setup.md", "text/markdown")
    expect(page.locator("#error")).to_contain_text("is not an image")

    # The page follows a switch made elsewhere (it polls the release list).
    twin = published.release("v1")  # the same databases under another name, with its own copy of the frozen index
    shutil.copytree(Path(published.cfg.workspace) / "releases" / "v1", Path(published.cfg.workspace) / "releases" / "v1b", dirs_exist_ok=True)
    twin.name = "v1b"
    twin.went_live_at = None
    published.registry.put(twin)
    published.switch("v1b")
    try:
        expect(page.locator("#live-text")).to_have_text("live: v1b", timeout=15_000)
        expect(page.locator("#notice")).to_contain_text("now v1b")
        expect(page.locator("#release-rows tr[data-release='v1'] .state")).to_have_text("retired")
        page.wait_for_function("() => [...document.querySelectorAll('.tile img')].every((img) => img.complete && img.naturalWidth > 0)")
        assert page.locator(".tile").first.get_attribute("title", timeout=1000) is not None
        page.screenshot(path=str(tmp_path / "web-page.png"), full_page=True)
        if os.environ.get("DOCS_SCREENSHOT") == "1":
            page.screenshot(path=str(REPO / "docs" / "img" / "web-page-images.png"), full_page=False)
    finally:
        published.switch("v1")
    assert errors == [], errors
    page.close()


def test_page_asks_for_the_token_when_the_api_needs_one(browser: Any, published: Any) -> None:
    """With KBRELEASE_API_TOKEN set, the page asks for it once and sends it with every call."""
    import uvicorn
    from playwright.sync_api import expect

    from .conftest import API_TOKEN

    app = make_client(published, api=API_TOKEN).app
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        page = browser.new_page()
        page.goto(url + "/")
        expect(page.locator("#token-dialog")).to_be_visible()
        page.fill("#token", API_TOKEN)
        page.click("#token-form button.primary")
        expect(page.locator("#live-text")).to_have_text("live: v1")
        page.set_input_files("#file", str(EXAMPLES / "images" / "stripes" / "stripes-02.png"))
        page.wait_for_function("() => { const img = document.querySelector('.tile img'); return img && img.complete && img.naturalWidth > 0; }")
        page.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
