"""A headless Chromium forks a failed example at its crop in Inspect: two clicks draw the right box, the
fork streams to the right answer, Keep as correction annotates it, and Annotate's Export writes it."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from app.shared.studio_log import StudioLog
from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import load_image
from core.protocol import format_tool_call
from core.recorder import Recorder
from core.scoring import judge_trajectory
from tests.test_app_browser import CHROMIUM, EXAMPLES, page, serve  # noqa: F401 (page: the browser fixture)

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which("chromium")),
                                reason="Debian's chromium is not installed (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
expect = sync_api.expect

MISSED = ["The tag is small; let me zoom in on it.\n\n" + format_tool_call(
    "crop_image_normalized", {"bbox_2d": [0.1, 0.1, 0.2, 0.2], "target_image": 1}), "The tag reads 7. \\boxed{7}"]
GOES_ON = ["(the fork's edited step)", "Now I can see it: the tag reads 3. \\boxed{3}"]  # turn i = turn i


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    from app import Studio

    data = tmp_path_factory.mktemp("fork-browser")
    (data / "goes_on.json").write_text(json.dumps(GOES_ON))
    studio = Studio(log=StudioLog(data / "studio.db"), data_dir=data, backend="replay",
                    replay=str(data / "goes_on.json"), step_delay=0.05)
    image = EXAMPLES / "zoom_needed_101.png"
    task = Task(question="What is written on the blue tag?", image=load_image(image), media_path=str(image), answer="3")
    failed = run_to_end(ReplayBackend(MISSED), task, config=LoopConfig(), store=studio.log.images)
    judge_trajectory(failed)
    studio.failed = Recorder(studio.log).write(failed)
    yield from serve(studio)


def test_fork_a_failed_example_at_its_crop_keep_it_and_find_it_in_the_export(studio_url, page):
    url, studio = studio_url
    assert studio.log.session(studio.failed)["correct"] == 0
    page.goto(f"{url}?session={studio.failed}")
    expect(page.locator("#step-raw")).to_contain_text("The tag is small", timeout=60_000)
    img = page.locator("#fork-image img").first
    expect(img).to_be_visible(timeout=30_000)
    img.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    box = img.bounding_box()
    page.mouse.click(box["x"] + 0.84 * box["width"], box["y"] + 0.37 * box["height"])  # around the tag
    expect(page.locator("#fork-box")).to_contain_text("second corner", timeout=10_000)
    page.mouse.click(box["x"] + 0.92 * box["width"], box["y"] + 0.46 * box["height"])
    expect(page.locator("#fork-box")).to_contain_text("new box", timeout=10_000)
    page.locator("#fork-btn").click()
    stream = page.locator("#fork-stream")
    expect(stream).to_contain_text("Answer: 3 ✅", timeout=60_000)
    expect(stream).to_contain_text("edited")
    fork_id = page.locator("#fork-id textarea, #fork-id input").first.input_value()
    fork = studio.log.get_trajectory(fork_id)
    assert fork.meta["fork_of"] == {"session": studio.failed, "step": 0}
    x0, y0, x1, y1 = fork.steps[0].arguments["bbox_2d"]
    assert 0.83 <= x0 <= 0.85 and 0.91 <= x1 <= 0.93 and 0.36 <= y0 <= 0.38 and 0.45 <= y1 <= 0.47
    # the table shows the fork under its parent, with its answer and verdict
    expect(page.locator("#sessions")).to_contain_text("↳ fork at step 1", timeout=20_000)
    page.locator("#fork-keep").click()
    expect(page.locator("#fork-kept")).to_contain_text("kept as correction", timeout=10_000)
    # Annotate → Export writes it as an SFT record
    page.get_by_role("tab", name="Annotate").click()
    page.get_by_text("Export the annotated set").click()
    page.get_by_role("button", name="Export", exact=True).click()
    export_md = page.locator("#annot-exported")
    expect(export_md).to_contain_text("Exported 1 SFT records", timeout=30_000)
    folder = Path(re.search(r"to (\S+annotations-\d+-\d+)", export_md.inner_text()).group(1))
    records = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert [r["meta"]["source_session"] for r in records] == [fork_id]
    assert records[0]["train_turns"] == [True, True]
    # a deep link opens the fork
    page.goto(f"{url}?session={fork_id}")
    expect(page.locator("#step-raw")).to_contain_text(f'"bbox_2d": [{x0}, {y0}', timeout=60_000)
    expect(page.locator("#session-id textarea, #session-id input").first).to_have_value(fork_id)
