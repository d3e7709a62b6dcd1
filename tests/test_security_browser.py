"""No script runs from what a model, an import or a visitor wrote: a headless Chromium (Debian's) opens a
session whose question, reasoning and answer carry script payloads, in the Ask chat and in Inspect.
Skipped with a reason when chromium is absent."""
from __future__ import annotations

import json
import re
import shutil
import socket

import pytest

from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import load_image
from core.protocol import format_tool_call
from app.shared.studio_log import StudioLog
from core.recorder import Recorder
from tests.test_app_browser import CHROMIUM, EXAMPLES, pytestmark  # noqa: F401 - the same skip condition

EXAMPLE = EXAMPLES / "zoom_needed_101.png"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")

PAYLOADS = ['<img src=x onerror="window.__pwned=1">', "<script>window.__pwned=2</script>",
            '<svg onload="window.__pwned=3"></svg>', "[link](javascript:window.__pwned=4)"]
EVIL = " ".join(PAYLOADS)
TURNS = [f"Let me zoom. {EVIL}\n\n" + format_tool_call("crop_image_normalized",
                                                       {"bbox_2d": [0.44, 0.66, 0.48, 0.72], "target_image": 1}),
         f"{EVIL} \\boxed{{{PAYLOADS[0]}}}"]


def serve(tmp_path_factory, name: str, turns: list[str], **studio_kw):
    """The Studio in this process on a free port, replaying `turns`; yields (url, studio)."""
    from app import Studio
    from app.public.guard import guard_launch_kwargs
    from app.ui import build_app, launch_kwargs

    data = tmp_path_factory.mktemp(name)
    replay = data / "turns.json"
    replay.write_text(json.dumps(turns))
    studio = Studio(log=StudioLog(data / "studio.db"), data_dir=data, backend="replay", replay=str(replay),
                    **studio_kw)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=port, **launch_kwargs(studio),
                        **guard_launch_kwargs(studio, demo))  # the server guard, as app.py runs it
    return demo, studio


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        yield chromium
        chromium.close()


def ask_the_example(page, question: str | None = None) -> None:
    """Pick the small-tag example (optionally with another question), press Ask, wait for the answer."""
    page.get_by_text("tag 1", exact=True).first.click(timeout=60_000)
    box = page.locator("#question textarea")
    sync_api.expect(box).to_have_value(re.compile("blue tag"), timeout=20_000)
    if question:
        box.fill(question)
    page.locator("#ask-btn").click()
    sync_api.expect(page.locator("#chat").get_by_text("Answer:")).to_be_visible(timeout=60_000)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    demo, studio = serve(tmp_path_factory, "xss", TURNS)
    task = Task(question=f"What is on the tag? {EVIL}", image=load_image(EXAMPLE), media_path=str(EXAMPLE))
    logged = Recorder(studio.log, "import").write(run_to_end(ReplayBackend(TURNS), task, config=LoopConfig(),
                                                             store=studio.log.images))
    yield demo.local_url, logged
    demo.close()


def test_script_payloads_in_questions_reasoning_and_answers_do_not_run(served, browser):
    url, logged = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    # Inspect: the deep link opens the stored session (header, raw text, compare)
    page.goto(f"{url}?session={logged}")
    sync_api.expect(page.locator("#session-id textarea, #session-id input").first).to_have_value(
        logged, timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=30_000)
    assert "What is on the tag?" in page.inner_text("body")  # the header and the raw text rendered
    page.wait_for_timeout(1000)
    assert page.evaluate("() => window.__pwned") is None
    # Ask: the same payloads typed by a visitor and written by the model, streamed into the chat
    page.goto(url)
    ask_the_example(page, f"Tag? {EVIL}")
    page.wait_for_timeout(1500)
    assert page.evaluate("() => window.__pwned") is None and not dialogs


@pytest.fixture(scope="module")
def public_url(tmp_path_factory):
    demo, studio = serve(tmp_path_factory, "public-browser", ["It reads 3. \\boxed{3}"], public=True)
    yield demo.local_url, studio
    demo.close()


def test_a_visitor_keeps_their_sessions_across_a_reload_and_no_one_else_sees_them(public_url, browser):
    url, studio = public_url
    alice = browser.new_context().new_page()
    alice.goto(url)
    ask_the_example(alice)
    (row,) = studio.log.list_sessions()[0]
    alice.reload()  # a new Gradio session; the browser's token is the same
    alice.get_by_role("tab", name="Inspect").click()
    sync_api.expect(alice.get_by_text(re.compile(r"^1 sessions"))).to_be_visible(timeout=30_000)
    assert row["id"] in alice.locator("#sessions").inner_text()
    bob = browser.new_context().new_page()  # another browser profile: another visitor
    bob.goto(url)
    bob.get_by_role("tab", name="Inspect").click(timeout=60_000)
    sync_api.expect(bob.get_by_text(re.compile(r"^0 sessions"))).to_be_visible(timeout=30_000)
    assert row["id"] not in bob.locator("#sessions").inner_text()
    bob.goto(f"{url}?session={row['id']}")  # the deep link does not open someone else's session
    sync_api.expect(bob.get_by_text(re.compile("no session"))).to_be_visible(timeout=30_000)
