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

from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import load_image
from core.protocol import format_tool_call
from core.recorder import Recorder
from app.studio_log import StudioLog

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "screenshots"

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which("chromium")),
                                reason="Debian's chromium is not installed (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")

TURNS = [
    "The tag is small; let me zoom in on it.\n\n" + format_tool_call(
        "crop_image_normalized", {"bbox_2d": [0.44, 0.66, 0.48, 0.72], "target_image": 1}),
    "The tag reads 3. \\boxed{3}",
]
WRONG_TURNS = [
    "The tag must be near the top. Let me zoom.\n\n" + format_tool_call(
        "crop_image_normalized", {"bbox_2d": [0.7, 0.05, 0.85, 0.2], "target_image": 1}),
    "I cannot read it; it looks like a 7. \\boxed{7}",
]
EXAMPLE = ROOT / "assets" / "examples" / "zoom_needed_101.png"

@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from app import Studio
    from app.ui import build_app, launch_kwargs

    data = tmp_path_factory.mktemp("browser")
    replay = data / "turns.json"
    replay.write_text(json.dumps(TURNS))
    studio = Studio(log=StudioLog(data / "studio.db"), data_dir=data, backend="replay", replay=str(replay),
                    step_delay=0.2, enable_training=True)
    # an earlier session with a wrong box, to annotate
    task = Task(question="What is written on the blue tag?", image=load_image(EXAMPLE), answer="3",
                media_path=str(EXAMPLE))
    wrong = run_to_end(ReplayBackend(WRONG_TURNS), task, config=LoopConfig(), store=studio.log.images)
    wrong.correct = False
    wrong.created_at -= 60
    studio.wrong_id = Recorder(studio.log, "app").write(wrong)
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
    page.get_by_text("zoom needed: small tag", exact=True).first.click()  # fills the file and the question
    question = page.locator("#question textarea")
    sync_api.expect(question).to_have_value(re.compile("blue tag"), timeout=20_000)
    page.locator("#ask-btn").click()
    chat = page.locator("#chat")
    sync_api.expect(chat.get_by_text("Answer: 3")).to_be_visible(timeout=60_000)
    # open the first step's thought so its crop-beside-source image shows
    chat.get_by_text("Step 1 · crop_image_normalized").first.click()
    crop = chat.locator("img").nth(1)
    crop.wait_for(state="visible", timeout=20_000)
    crop.scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('#chat img')].filter(i => i.complete && "
                           "i.naturalWidth > 300).length >= 1", timeout=20_000)
    page.evaluate("() => { const big = [...document.querySelectorAll('#chat img')].filter(i => i.naturalWidth > 300 "
                  "&& i.naturalWidth > i.naturalHeight * 1.5); big[big.length - 1].scrollIntoView({block: 'center'}); "
                  "window.scrollTo(0, 0); }")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "ask.png"))
    asked = next(r for r in studio.log.list_sessions()[0] if r["client"] == "app")
    assert asked["status"] == "done" and asked["n_ops"] == 1 and asked["answer"] == "3"

    # Inspect: the deep link opens the session with its replay figure
    page.goto(f"{url}?session={asked['id']}")
    sync_api.expect(page.locator("#session-id textarea, #session-id input").first).to_have_value(asked["id"],
                                                                                                 timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=30_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SHOTS / "inspect.png"), full_page=True)

    # Annotate: the queue (oldest first: the wrong-box session), keys j/k, a label by key, a box by two clicks
    page.get_by_role("tab", name="Annotate").click()
    page.get_by_role("button", name="Load queue").click()
    session = page.locator("#annot-session textarea, #annot-session input").first
    sync_api.expect(session).to_have_value(studio.wrong_id, timeout=20_000)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("j")
    sync_api.expect(session).to_have_value(asked["id"], timeout=10_000)
    page.keyboard.press("k")
    sync_api.expect(session).to_have_value(studio.wrong_id, timeout=10_000)
    # the id box changes before the session is shown: wait for its header, or the target radio is reset after our click
    sync_api.expect(page.locator("#annot-header")).to_contain_text(studio.wrong_id, timeout=10_000)
    page.locator("#annot-target").get_by_text("step 1 · crop_image_normalized").click()
    sync_api.expect(page.locator("#annot-target input[value='step 1 · crop_image_normalized']")).to_be_checked(
        timeout=5_000)
    page.wait_for_timeout(800)
    page.keyboard.press("1")
    sync_api.expect(page.locator("#annot-label input[value='wrong box']")).to_be_checked(timeout=5_000)
    img = page.locator("#annot-image img").first
    img.wait_for(state="visible", timeout=10_000)
    box = img.bounding_box()
    page.mouse.click(box["x"] + 0.43 * box["width"], box["y"] + 0.65 * box["height"])
    page.wait_for_timeout(800)
    page.mouse.click(box["x"] + 0.49 * box["width"], box["y"] + 0.73 * box["height"])
    x1 = page.locator("#annot-x1 input").first
    sync_api.expect(x1).not_to_have_value("", timeout=10_000)
    values = [float(page.locator(f"#annot-{n} input").first.input_value()) for n in ("x0", "y0", "x1", "y1")]
    assert values == pytest.approx([0.43, 0.65, 0.49, 0.73], abs=0.02), values
    page.locator("#annot-answer textarea, #annot-answer input").first.fill("3")
    page.locator("#annot-comment textarea").first.fill("the tag is in the middle, not at the top")
    page.locator("#annot-annotator textarea, #annot-annotator input").first.fill("browser-test")
    page.wait_for_timeout(500)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "annotate.png"), full_page=True)
    page.locator("#annot-save").click()
    sync_api.expect(page.locator("#annot-saved")).to_contain_text("saved annotation", timeout=10_000)
    (ann,) = studio.log.list_annotations(studio.wrong_id)
    assert (ann["step_idx"], ann["label"], ann["corrected_answer"], ann["annotator"]) == (0, "wrong box", "3",
                                                                                         "browser-test")
    assert ann["corrected_box"] == pytest.approx(values, abs=1e-3)

    # Export (Python API, same code as the button) and train on it from the Train tab: a real SFT job
    from app.export import export_annotated
    export_dir = studio.data_dir / "exports" / "browser"
    assert export_annotated(studio.log, export_dir).records == 1
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Dataset (data/… or an annotation export)").fill(str(export_dir))
    page.keyboard.press("Enter")
    page.get_by_label("Extra arguments (key=value … or --flags)").fill(
        "max_steps=4 save_steps=100 vocab_size=400 learning_rate=0.01")
    page.get_by_label("Config").fill("configs/sft_tiny_ci.json")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    page.locator("#train-launch").click()
    job_id = page.locator("#job-id textarea, #job-id input").first
    sync_api.expect(job_id).not_to_have_value("", timeout=10_000)
    jid = job_id.input_value()
    job = studio.jobs.wait(jid, 180)
    assert job["status"] == "done", Path(job["log_path"]).read_text()[-3000:]
    assert f"data={export_dir}" in job["cmd"]
    sync_api.expect(page.locator("#train-root")).to_contain_text("done", timeout=20_000)
    page.locator("#train-root .js-plotly-plot").first.wait_for(state="visible", timeout=20_000)
    page.wait_for_timeout(2500)
    page.screenshot(path=str(SHOTS / "train.png"), full_page=True)
    for name in ("ask", "inspect", "annotate", "train"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
