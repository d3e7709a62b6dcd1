"""A headless Chromium (Debian's) drives the real Studio: the Ask, Inspect and Annotate bugs, and the
whole loop ask → annotate → export → fine-tune → evaluate → compare.

Screenshots go to a temporary folder; `python scripts/screenshots.py` runs the loop test with
STUDIO_SCREENSHOTS=docs/screenshots to refresh the README's. Skipped when chromium is absent.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
from datetime import date
from pathlib import Path

import pytest

from app.shared.studio_log import StudioLog
from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import load_image
from core.protocol import format_tool_call
from core.recorder import Recorder

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which("chromium")),
                                reason="Debian's chromium is not installed (apt-get install -y chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
expect = sync_api.expect

TURNS = [
    "The tag is small; let me zoom in on it.\n\n" + format_tool_call(
        "crop_image_normalized", {"bbox_2d": [0.44, 0.66, 0.48, 0.72], "target_image": 1}),
    "The tag reads 3. \\boxed{3}",
]
VIDEO_TURNS = ["The sign shows in a few frames.\n\n" + format_tool_call("select_frames", {"target_frames": [2, 5, 9]}),
               "The sign reads 5. \\boxed{5}"]
UNCLOSED = ['Let me zoom.<tool_call>{"bbox_2d": [0.65, 0.35, 0.65], ". \\boxed{5}']
THREE_STEPS = [TURNS[0], "Closer.\n\n" + format_tool_call("crop_image_normalized",
                                                          {"bbox_2d": [0.1, 0.1, 0.9, 0.9], "target_image": 2}),
               "Step three says \\boxed{3}"]


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("STUDIO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from app import Studio
    from train.synth.build import BuildConfig, build

    data = tmp_path_factory.mktemp("browser")
    for name, turns in (("turns", TURNS), ("video", VIDEO_TURNS), ("unclosed", UNCLOSED)):
        (data / f"{name}.json").write_text(json.dumps(turns))
    build(BuildConfig(out=str(data / "tinyzoom"), train=4, validation=0, test=2, workers=1))  # mixed in; own split
    studio = Studio(log=StudioLog(data / "studio.db"), data_dir=data, backend="replay",
                    replay=str(data / "turns.json"), step_delay=0.05, enable_training=True)
    task = Task(question="Which step is this?", image=load_image(EXAMPLES / "zoom_needed_101.png"),
                media_path=str(EXAMPLES / "zoom_needed_101.png"))
    studio.three = Recorder(studio.log, "test").write(run_to_end(ReplayBackend(THREE_STEPS), task, config=LoopConfig(),
                                                                  store=studio.log.images))
    studio.one = Recorder(studio.log, "test").write(run_to_end(ReplayBackend(["Just \\boxed{1}"]), task,
                                                                config=LoopConfig(), store=studio.log.images))
    yield from serve(studio)


def serve(studio):
    """The Studio on a free local port: yields (its URL, the studio), and closes it after."""
    from app.public.guard import guard_launch_kwargs
    from app.ui import build_app, launch_kwargs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=port, **launch_kwargs(),
                        **guard_launch_kwargs(studio, demo))  # the server guard, as app.py runs it
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


def ask(page, url: str, example: int, replay: Path | None = None) -> str:
    """Ask on an example from a fresh page (replay turns from `replay`); returns the session id."""
    page.goto(url)
    page.locator("#examples button").nth(example).click()
    expect(page.locator("#question textarea")).not_to_have_value("", timeout=20_000)
    if replay is not None:
        page.locator("#ask-settings").get_by_text("Settings").first.click()
        model = page.locator("#ask-model textarea, #ask-model input").first
        # Under load the freshly opened box can come back to its default right after typing (the
        # page still settling): type again until the value holds for a second.
        for _ in range(5):
            model.fill(str(replay))
            model.press("Tab")  # the change lands before the click, even on a loaded machine
            page.wait_for_timeout(1000)
            if model.input_value() == str(replay):
                break
        expect(model).to_have_value(str(replay))
    page.locator("#ask-btn").click()
    status = page.locator("#answer-status")
    expect(status).to_contain_text(re.compile(r"^\s*(done|stopped|error|cancelled)"), timeout=60_000)
    return re.search(r"session ([0-9a-f]{32})", status.inner_text()).group(1)


def test_video_frame_strip_shows_without_a_click(app_url, page):
    url, studio = app_url
    sid = ask(page, url, 4, studio.data_dir / "video.json")
    expect(page.locator("#chat").get_by_text("Step 1 · select_frames")).to_be_visible()
    # the strip of three frames, in view without opening the step
    page.wait_for_function("() => [...document.querySelectorAll('#chat img')].some(i => i.complete && "
                           "i.offsetParent !== null && i.naturalWidth > 2 * i.naturalHeight && i.naturalWidth > 300)",
                           timeout=20_000)
    expect(page.locator("#chat")).to_contain_text("Answer: 5 ✅")  # the example's known answer
    assert studio.log.session(sid)["n_ops"] == 1


def test_an_unclosed_tool_call_is_an_error_step_and_found_by_the_filter(app_url, page):
    from app.shared import filters as I

    url, studio = app_url
    sid = ask(page, url, 0, studio.data_dir / "unclosed.json")
    chat = page.locator("#chat")
    expect(chat.get_by_text("Step 1 · ⚠️ error")).to_be_visible()
    expect(chat).to_contain_text("not complete")
    assert studio.log.session(sid)["n_errors"] == 1
    rows, _ = studio.log.list_sessions(I.make_filter(has_errors="yes"))
    assert sid in [r["id"] for r in rows]


def test_inspect_slider_keys_one_step_session_dates_and_pages(app_url, page):
    url, studio = app_url
    three = studio.log.get_trajectory(studio.three)
    page.goto(f"{url}?session={studio.three}")
    raw = page.locator("#step-raw")
    expect(raw).to_contain_text("The tag is small", timeout=60_000)
    page.locator("#step-no input[type=range]").focus()
    page.keyboard.press("ArrowRight")
    expect(raw).to_contain_text("Closer.", timeout=40_000)
    number = page.locator("#step-no input[type=number]")
    number.fill("3")
    number.press("Enter")
    expect(raw).to_contain_text(three.steps[2].text[:20], timeout=10_000)
    # the selected row is marked in the table
    expect(page.locator("#sessions")).to_contain_text("▶ " + studio.three, timeout=10_000)
    # "Until today" includes today; page 9 of 1 shows page 1
    page.locator("#f-until textarea, #f-until input").first.fill(date.today().isoformat())
    page.locator("#page input").first.fill("9")
    page.locator("#search-btn").click()
    expect(page.locator("#table-info")).to_contain_text("page 1 of 1 (there is no page 9)", timeout=10_000)
    expect(page.locator("#sessions")).to_contain_text(studio.one)
    expect(page.locator("#step-no")).to_be_visible()
    # a one-step session has no step slider (it offered steps 1-2)
    page.goto(f"{url}?session={studio.one}")
    expect(raw).to_contain_text("Just", timeout=60_000)
    expect(page.locator("#step-no")).to_be_hidden()


def test_the_loop_ask_annotate_export_finetune_evaluate_compare(app_url, page, shots):
    """The README's "Teach it what it got wrong" walk, step by step."""
    url, studio = app_url
    assets_before = tree_hash(ROOT / "assets")
    # 1. Ask on three examples (the replayed model zooms on the same spot each time)
    ids = [ask(page, url, 0)]
    chat = page.locator("#chat")
    expect(chat).to_contain_text("Answer: 3 ✅")  # the example's known answer
    page.wait_for_function("() => [...document.querySelectorAll('#chat img')].some(i => i.complete && "
                           "i.naturalWidth > 300)", timeout=20_000)
    page.screenshot(path=str(shots / "ask.png"))
    ids += [ask(page, url, k) for k in (1, 2)]
    expect(chat).to_contain_text("Answer: 3 ❌")  # example 3's large circle is green
    page.goto(f"{url}?session={ids[0]}")
    page.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(800)
    page.screenshot(path=str(shots / "inspect.png"), full_page=True)

    # 2. Annotate two: example 2 (tag 2) gets a box on step 1 and an answer on step 2; example 3 an answer
    page.get_by_role("tab", name="Annotate").click()
    page.get_by_role("button", name="Load queue").click()
    session = page.locator("#annot-session textarea, #annot-session input").first
    header = page.locator("#annot-header")
    queue = page.locator("#annot-queue")
    expect(queue).to_contain_text("unlabelled", timeout=20_000)
    queue.get_by_text(ids[1]).click()  # a row of the queue opens its session
    expect(header).to_contain_text(ids[1], timeout=10_000)
    target = page.locator("#annot-target")
    target.get_by_text("step 1 · crop_image_normalized").click()
    expect(page.locator("#annot-x0 input").first).to_be_visible(timeout=10_000)
    comment = page.locator("#annot-comment textarea").first
    comment.press_sequentially("typed for step 1")  # typing (not fill) fires the input event
    expect(page.locator("#annot-dirty")).to_contain_text("unsaved changes", timeout=10_000)
    target.get_by_text("step 2 · answer").click()  # the form clears and shows the answer field, not the box
    expect(comment).to_have_value("", timeout=10_000)
    expect(page.locator("#annot-x0")).to_be_hidden(timeout=10_000)
    expect(page.locator("#annot-answer")).to_be_visible()
    expect(page.locator("#annot-dirty")).to_contain_text("cleared")
    target.get_by_text("step 1 · crop_image_normalized").click()
    expect(page.locator("#annot-x0")).to_be_visible(timeout=10_000)
    expect(page.locator("#annot-answer")).to_be_hidden()
    wrong_box = page.locator("#annot-label input[value='wrong box']")
    wrong_box.click()
    wrong_box.focus()
    page.keyboard.press("ArrowRight")  # moves within the radio group; never to another session
    page.wait_for_timeout(600)
    assert session.input_value() == ids[1]
    wrong_box.click()
    img = page.locator("#annot-image img").first
    box = img.bounding_box()
    page.mouse.click(box["x"] + 0.84 * box["width"], box["y"] + 0.37 * box["height"])  # around the tag
    expect(page.locator("#annot-iou")).to_contain_text("second corner", timeout=10_000)
    page.mouse.click(box["x"] + 0.92 * box["width"], box["y"] + 0.46 * box["height"])
    expect(page.locator("#annot-x1 input").first).not_to_have_value("", timeout=10_000)
    page.locator("#annot-annotator textarea, #annot-annotator input").first.fill("browser-test")
    page.screenshot(path=str(shots / "annotate.png"), full_page=True)
    page.locator("#annot-save").click()
    expect(page.locator("#annot-saved")).to_contain_text("saved annotation", timeout=10_000)
    target.get_by_text("step 2 · answer").click()
    expect(page.locator("#annot-x0")).to_be_hidden(timeout=10_000)
    page.locator("#annot-label input[value='wrong answer']").click()
    page.locator("#annot-answer textarea, #annot-answer input").first.fill("2")
    page.locator("#annot-save").click()
    expect(page.locator("#annot-saved")).to_contain_text("on step 2 · answer", timeout=10_000)
    expect(queue).to_contain_text("labelled")
    page.locator("#annot-next").click()
    expect(header).to_contain_text(ids[2], timeout=10_000)
    page.locator("#annot-label input[value='wrong answer']").click()
    page.locator("#annot-answer textarea, #annot-answer input").first.fill("green")
    page.locator("#annot-save").click()
    expect(page.locator("#annot-saved")).to_contain_text("on whole trajectory", timeout=10_000)
    a1, a2 = studio.log.list_annotations(ids[1]), studio.log.list_annotations(ids[2])
    assert [(a["step_idx"], a["label"], a["comment"], a["corrected_answer"], a["corrected_box"] is not None)
            for a in a1] == [(0, "wrong box", None, None, True), (1, "wrong answer", None, "2", False)]
    assert [(a["step_idx"], a["corrected_answer"], a["corrected_box"]) for a in a2] == [(None, "green", None)]

    # 3. Export from the tab; both records checked turn by turn
    page.get_by_text("Export the annotated set").click()
    page.get_by_role("button", name="Export", exact=True).click()
    export_md = page.locator("#annot-exported")
    expect(export_md).to_contain_text("Exported 2 SFT records", timeout=30_000)
    folder = Path(re.search(r"to (\S+annotations-\d+-\d+)", export_md.inner_text()).group(1))
    lines = (folder / "train.jsonl").read_text().splitlines()
    records = {r["meta"]["source_session"]: r for r in map(json.loads, lines)}
    texts = {sid: [m["content"] if isinstance(m["content"], str) else
                   "".join(c.get("text", "") for c in m["content"] if isinstance(c, dict))
                   for m in r["messages"] if m["role"] == "assistant"] for sid, r in records.items()}
    assert records[ids[1]]["train_turns"] == [True, True]
    fix, final = texts[ids[1]]
    assert fix.startswith(TURNS[0].split("<tool_call>")[0]) and "\\boxed" not in fix
    call = json.loads(fix.split("<tool_call>")[1].split("</tool_call>")[0])
    assert call["arguments"]["bbox_2d"] == pytest.approx([0.84, 0.37, 0.92, 0.46], abs=0.02), call
    assert final == "The tag reads 2. \\boxed{2}"
    assert records[ids[2]]["train_turns"] == [True, True]
    assert texts[ids[2]] == [TURNS[0], "The tag reads green. \\boxed{green}"]
    expect(queue).to_contain_text("exported", timeout=10_000)

    # 4. Fine-tune the embedded model on the export from the Train tab (its default config)
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train-config input").first).to_have_value("configs/sft_corrections.json")
    page.locator("#train-dataset input").first.fill(str(folder))
    page.keyboard.press("Enter")
    page.locator("#train-extra textarea, #train-extra input").first.fill("max_steps=2")
    expect(page.locator("#train-command .cm-content")).to_contain_text("max_steps=2", timeout=20_000)
    expect(page.locator("#train-warning")).to_contain_text("2 training records")  # tiny data, said before launch
    shown = page.locator("#train-command .cm-content").inner_text()
    page.locator("#train-launch").click()
    job_id = page.locator("#job-id textarea, #job-id input").first
    expect(job_id).not_to_have_value("", timeout=10_000)
    from app.training import jobs as J

    sft = studio.jobs.wait(job_id.input_value(), 300)
    assert sft["status"] == "done", Path(sft["log_path"]).read_text()[-3000:]
    assert " ".join(shown.split()) == J.preview(sft["cmd"])  # the preview was exactly what ran
    assert f"data={folder}" in sft["cmd"] and (Path(sft["out_dir"]) / "final" / "model.safetensors").exists()

    # 5. One click evaluates it against the embedded model on the same held-out items
    expect(page.locator("#train-root")).to_contain_text("done", timeout=20_000)
    page.locator("#train-gain").click()
    expect(page.locator("#train-launched")).to_contain_text("-gain-", timeout=10_000)
    expect(job_id).not_to_have_value(sft["id"], timeout=10_000)
    gain = studio.jobs.wait(job_id.input_value(), 400)
    assert gain["kind"] == "gain" and gain["status"] == "done", Path(gain["log_path"]).read_text()[-3000:]
    result = page.locator("#train-gain-result")
    expect(result).to_contain_text("start model", timeout=20_000)
    expect(result).to_contain_text("fine-tuned")
    figures = json.loads((Path(gain["out_dir"]) / "gain.json").read_text())
    assert figures["base_model"] == "assets/pixel-reasoner-tiny"
    assert {k: v["n"] for k, v in figures["sets"].items()} == {"trained on": 2, "own split": 2}  # Ask's sessions
    for part, c in figures["sets"].items():
        expect(result).to_contain_text(part)
        for who in ("base", "tuned"):
            expect(result).to_contain_text(f"{100 * c[who]['accuracy']:.1f}%")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(shots / "train.png"), full_page=True)
    assert tree_hash(ROOT / "assets") == assets_before  # nothing wrote into the shipped model
