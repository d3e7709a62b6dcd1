"""A headless Chromium (Debian's) loads the Studio, runs an example, and saves screenshots of each tab.

The screenshots go to docs/screenshots/ (README). Skipped with a reason when chromium is absent.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from core.protocol import format_tool_call
from core.sessionlog import SessionLog

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "screenshots"

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which("chromium")),
                                reason="Debian's chromium is not installed (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")

TURNS = [
    "The sign is small; let me zoom in on it.\n\n" + format_tool_call(
        "crop_image_normalized", {"bbox_2d": [0.13, 0.23, 0.27, 0.37], "target_image": 1}),
    "The sign reads WOOLSHOPS. \\boxed{WOOLSHOPS}",
]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from app import Studio
    from app.ui import build_app, launch_kwargs

    data = tmp_path_factory.mktemp("browser")
    replay = data / "turns.json"
    replay.write_text(json.dumps(TURNS))
    studio = Studio(log=SessionLog(data / "studio.db"), data_dir=data, backend="replay", replay=str(replay),
                    step_delay=0.2, enable_training=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=port, **launch_kwargs())
    yield demo.local_url, studio
    demo.close()


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        yield pg
        browser.close()


def test_run_an_example_and_screenshot_each_tab(app_url, page):
    url, studio = app_url
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(url)
    page.get_by_text("Pixel Reasoner Studio").first.wait_for(timeout=60_000)
    page.get_by_text("street sign").first.click()  # the first example fills the file and the question
    question = page.locator("#question textarea")
    sync_api.expect(question).to_have_value(re.compile("sign"), timeout=20_000)
    page.locator("#ask-btn").click()
    chat = page.locator("#chat")
    sync_api.expect(chat.get_by_text("Answer: WOOLSHOPS")).to_be_visible(timeout=60_000)
    # open the first step's thought so its crop-beside-source image shows
    chat.get_by_text("Step 1 · crop_image_normalized").first.click()
    crop = chat.locator("img").nth(1)
    crop.wait_for(state="visible", timeout=20_000)
    crop.scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('#chat img')].filter(i => i.complete && "
                           "i.naturalWidth > 300).length >= 1", timeout=20_000)
    page.screenshot(path=str(SHOTS / "ask.png"))
    (row,) = studio.log.list_sessions()[0]
    assert row["status"] == "done" and row["n_ops"] == 1

    # Inspect: the deep link opens the session with its replay figure
    page.goto(f"{url}?session={row['id']}")
    sync_api.expect(page.locator("#session-id textarea, #session-id input").first).to_have_value(row["id"],
                                                                                                 timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=30_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SHOTS / "inspect.png"), full_page=True)

    for name in ("Annotate", "Train"):
        page.get_by_role("tab", name=name).click()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / f"{name.lower()}.png"))
    for name in ("ask", "inspect", "annotate", "train"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
