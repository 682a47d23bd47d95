"""The demo in a real browser: Debian's headless Chromium driven by Playwright, all on 127.0.0.1.

Needs ``apt-get install -y chromium`` (``/usr/bin/chromium``, or set ``GALAXY_PIPELINE_CHROMIUM``)
and ``pip install playwright gradio``; skips cleanly otherwise (never run ``playwright install``).
``GALAXY_PIPELINE_SAVE_SCREENSHOT=1`` also saves the screenshot to docs/figures/demo_screenshot.png;
``GALAXY_PIPELINE_DEMO_MODEL=<folder or Hub id>`` serves that model instead of a tiny random one.
"""

import os
import shutil
import socket
from pathlib import Path

import pytest
from conftest import make_tiny_pipeline

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("GALAXY_PIPELINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "demo_screenshot.png"
TIMEOUT_MS = 45_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # pandas deprecations inside gradio
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def demo_url():
    from galaxy_pipeline.demo import build_demo
    from galaxy_pipeline.hub import load_pipeline

    model = os.environ.get("GALAXY_PIPELINE_DEMO_MODEL")
    if model:  # a trained model makes a screenshot worth showing
        pipe, source = load_pipeline(model)
        demo = build_demo(pipe, max_images=4, max_steps=25, source=source)
    else:
        pipe = make_tiny_pipeline(sample_size=64, redshift_max=2.0)
        demo = build_demo(pipe, max_images=4, max_steps=3, default_sampler="ddim")
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True, share=False
    )
    yield url
    demo.close()


def _block_the_internet(route):
    host = route.request.url.split("/")[2].split(":")[0]
    if host in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort()


def test_generate_galaxies_in_the_browser(demo_url, tmp_path):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", _block_the_internet)
            page.goto(demo_url)

            redshift = page.locator("#redshift input[type=range]")
            redshift_box = page.locator("#redshift input[type=number]")
            before = float(redshift_box.input_value())
            redshift.focus()
            for _ in range(30):
                redshift.press("ArrowRight")
            moved = float(redshift_box.input_value())
            assert moved == pytest.approx(before + 0.30, abs=0.011)  # snapped to the slider's grid

            page.locator("#generate").click()
            images = page.locator("#gallery img")
            sync_api.expect(images).to_have_count(4, timeout=TIMEOUT_MS)
            sync_api.expect(page.locator("#bands img")).to_have_count(5)
            sync_api.expect(page.locator("#status")).to_contain_text(f"z = {moved:.2f}")
            assert all(images.nth(k).evaluate("img => img.complete && img.naturalWidth > 0") for k in range(4))
            sync_api.expect(page.locator("#fits")).to_contain_text(".fits")

            page.screenshot(path=tmp_path / "demo.png", full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    if os.environ.get("GALAXY_PIPELINE_SAVE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "demo.png", SCREENSHOT)
