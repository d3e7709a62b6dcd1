"""A headless Chromium asks the embedded model (real forward passes) about a real photo and checks that
the Studio says how sure it was: the confidence and the unfamiliar-picture note beside the answer in
Ask; in Inspect the same, the per-step mean log-probability column, the least sure tokens marked in
the step's text, and the "unsure answers" filter. Skipped without chromium or playwright."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from app.shared.filters import make_filter
from app.shared.studio_log import StudioLog
from tests.browser_kit import CHROMIUM, page, serve  # noqa: F401 - page is a fixture

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which("chromium")),
                                reason="Debian's chromium is not installed (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
pytest.importorskip("skimage", reason="scikit-image (the real photos) is not installed")
expect = sync_api.expect


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from app import Studio
    from bench.familiarity_bench import sample_photo

    data = tmp_path_factory.mktemp("honest")
    sample_photo("coffee").save(data / "coffee.png")
    studio = Studio(log=StudioLog(data / "studio.db"), data_dir=data, backend="transformers")
    with serve(studio) as url:
        yield url, studio


def test_ask_and_inspect_say_how_sure_the_model_was(app_url, page, tmp_path):
    shots = Path(os.environ.get("STUDIO_SCREENSHOTS") or tmp_path)
    url, studio = app_url
    page.goto(url)
    page.locator("#media input[type=file]").set_input_files(str(studio.data_dir / "coffee.png"))
    page.locator("#question textarea").fill("What colour is the cup?")
    page.locator("#ask-btn").click()
    status = page.locator("#answer-status")
    expect(status).to_contain_text(re.compile(r"^\s*(done|stopped|error)"), timeout=120_000)
    sid = re.search(r"session ([0-9a-f]{32})", status.inner_text()).group(1)
    traj = studio.log.get_trajectory(sid)
    assert traj.answer_confidence is not None and traj.familiar is False
    chat = page.locator("#chat")
    expect(chat).to_contain_text(f"confidence {100 * traj.answer_confidence:.0f}%")
    expect(chat).to_contain_text("unfamiliar picture")
    page.screenshot(path=str(shots / "ask_confidence.png"))

    page.goto(f"{url}?session={sid}")
    expect(page.locator("#session-id textarea, #session-id input").first).to_have_value(sid, timeout=30_000)
    expect(page.get_by_text("unfamiliar picture").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("mean log-prob").first).to_be_visible()
    unsure = page.locator("#step-unsure")
    expect(unsure).to_be_visible()
    page.screenshot(path=str(shots / "inspect_confidence.png"), full_page=True)

    page.get_by_label("Outcome").click()
    page.get_by_role("option", name="unsure answers").click()
    page.locator("#search-btn").click()
    rows, _ = studio.log.list_sessions(make_filter(outcome="unsure answers"))
    expected = "1 sessions" if traj.answer_confidence < 0.5 else "0 sessions"
    assert [r["id"] for r in rows] == ([sid] if traj.answer_confidence < 0.5 else [])
    expect(page.locator("#table-info")).to_contain_text(expected, timeout=20_000)


def test_inspect_marks_the_least_sure_tokens_of_a_step(app_url, page, tmp_path):
    """A zoom on the example picture: the model hesitates on the box's digits; each such token is marked
    with its probability in the step's text."""
    from core.backends import GenerationParams, load_backend
    from core.loop import LoopConfig, Task, run_to_end
    from core.media import load_image
    from core.operations import PixelLimits
    from core.recorder import Recorder

    url, studio = app_url
    example = Path(__file__).resolve().parents[1] / "assets" / "examples" / "zoom_needed_101.png"
    task = Task(question="What is written on the blue tag?", image=load_image(example), media_path=str(example))
    traj = run_to_end(load_backend("transformers"), task, config=LoopConfig(pixels=PixelLimits.preset("tiny")),
                      params=GenerationParams(max_new_tokens=128), store=studio.log.images)
    sid = Recorder(studio.log, "test").write(traj)
    step = next((s for s in traj.steps if s.unsure), None)
    if step is None:
        pytest.skip("this model was sure of every token here: nothing to mark")
    page.goto(f"{url}?session={sid}")
    expect(page.locator("#session-id textarea, #session-id input").first).to_have_value(sid, timeout=30_000)
    if step.index > 0:
        page.locator("#step-no input[type=number]").fill(str(step.index + 1))
        page.locator("#step-no input[type=number]").press("Enter")
    unsure = page.locator("#step-unsure")
    for u in step.unsure:
        expect(unsure).to_contain_text(f"p {u['p']:.2f}", timeout=20_000)
    unsure.screenshot(path=str(Path(os.environ.get("STUDIO_SCREENSHOTS") or tmp_path) / "unsure_tokens.png"))
    rows = page.locator("table").filter(has_text="mean log-prob")
    expect(rows).to_contain_text(f"{step.mean_logprob:.3f}"[:5])
