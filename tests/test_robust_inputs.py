"""What a file, a model or a full disk says never crashes the Studio: real images in odd formats, real
SQLite files on unwritable paths and under a file-size limit, imports of hostile JSON, a batch whose
backend fails for one conversation, and 1 MB of \\boxed{ text."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.shared import importers as I
from core import protocol as P
from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_batch, run_to_end
from core.media import MediaError, load_image
from core.operations import PixelLimits
from core.scoring import extract_answer, last_boxed
from app.shared.studio_log import StudioLog
from core.recorder import Recorder
from core.sessionlog import StorageError, open_log
from core.sessionquery import SessionFilter
from tests.conftest import photo_like

ROOT = Path(__file__).resolve().parents[1]
TINY = LoopConfig(pixels=PixelLimits.preset("tiny"))


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# ---- pixels ---------------------------------------------------------------------------------------

def test_16_bit_png_keeps_its_grey_levels():
    ramp = np.linspace(0, 65535, 64 * 256).reshape(64, 256).astype(np.uint16)
    img = load_image(png_bytes(Image.fromarray(ramp)))
    arr = np.asarray(img)
    assert img.mode == "RGB" and 120 < arr.mean() < 135 and (arr == 255).mean() < 0.01  # was 99.6% white
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255


def test_exif_orientation_is_applied():
    photo = Image.new("RGB", (200, 100), (255, 0, 0))
    photo.paste((0, 0, 255), (0, 0, 20, 100))  # a blue band on the left edge as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img = load_image(png_bytes(photo, "JPEG", exif=exif, quality=95))
    assert img.size == (100, 200)  # portrait, as a viewer shows it
    top = np.asarray(img)[:15].reshape(-1, 3).mean(axis=0)
    assert top[2] > 200 and top[0] < 60  # the band is now along the top


def test_palette_alpha_and_cmyk_become_the_colours_a_viewer_shows():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    rgba.paste((0, 128, 0, 255), (0, 0, 20, 40))
    arr = np.asarray(load_image(png_bytes(rgba)))
    assert tuple(arr[5, 30]) == (255, 255, 255) and tuple(arr[5, 5]) == (0, 128, 0)  # transparent -> white
    pal = rgba.convert("RGB").quantize(4)
    pal.info["transparency"] = pal.getpixel((30, 5))
    arr = np.asarray(load_image(png_bytes(pal, transparency=pal.getpixel((30, 5)))))
    assert tuple(arr[5, 30]) == (255, 255, 255)
    cmyk = Image.new("CMYK", (30, 30), (0, 255, 255, 0))  # pure red in CMYK
    red = np.asarray(load_image(png_bytes(cmyk, "JPEG", quality=95)))[15, 15]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_extreme_aspect_ratio_is_refused_at_load_with_a_clear_message(tmp_path):
    path = tmp_path / "deep" / "strip.png"
    path.parent.mkdir()
    Image.new("L", (1, 60000)).save(path)
    with pytest.raises(MediaError) as e:
        load_image(path)
    msg = str(e.value)
    assert msg.startswith("strip.png is 1x60000") and "200 times" in msg and str(tmp_path) not in msg


def test_corrupt_image_message_names_the_file_not_the_server_folder(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(png_bytes(photo_like(160, 120))[:200])
    with pytest.raises(MediaError) as e:
        load_image(path)
    assert "broken.png" in str(e.value) and str(tmp_path) not in str(e.value) and "\n" not in str(e.value)


def test_corrupt_video_message_is_one_line_without_server_folders_or_decoder_log(tmp_path):
    from core.media import Video

    path = tmp_path / "clip.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError) as e:
        Video.from_file(path)
    msg = str(e.value)
    assert msg.startswith("clip.mp4 is not a readable video") and str(tmp_path) not in msg and "\n" not in msg
    assert ".cc:" not in msg and len(msg) < 300


# ---- answers -------------------------------------------------------------------------------------

def test_one_megabyte_of_boxed_text_is_read_in_linear_time():
    text = "\\boxed{" * (1_000_000 // 7)
    t0 = time.perf_counter()
    assert last_boxed(text) is None and extract_answer(text) is None
    assert time.perf_counter() - t0 < 2.0  # loose (shared CI); bench/safety_bench.py prints the figure
    assert last_boxed("a \\boxed{x} b " + "\\boxed{" * 10_000) == "x"
    t0 = time.perf_counter()
    assert extract_answer("<answer>" * 100_000 + "7</answer>").endswith("7")  # was quadratic too
    assert time.perf_counter() - t0 < 2.0


def _rescanning_last_boxed(text: str) -> str | None:
    """The former quadratic definition, kept as the reference the linear one must agree with."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if text[j] == "}" and depth == 0:
                    return text[i + 1:j].strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def test_linear_last_boxed_agrees_with_the_rescanning_definition():
    import random

    rnd = random.Random(5)
    parts = ["{", "}", "a", "\\boxed", "\\boxed{", " ", "é", "\\box", "ed{", "\U0001F600", "\\frac{1}{2}"]
    for _ in range(3000):
        text = "".join(rnd.choice(parts) for _ in range(rnd.randint(0, 30)))
        assert last_boxed(text) == _rescanning_last_boxed(text), text


# ---- the loop ---------------------------------------------------------------------------------------

class FailsOn(ReplayBackend):
    """A real replay backend whose batched call fails whenever one given question is in the batch."""

    def __init__(self, turns, bad_question: str) -> None:
        super().__init__(turns)
        self.bad = bad_question

    def generate_batch(self, conversations, params):
        for messages in conversations:
            if any(self.bad in (p.get("text") or "") for p in messages[1]["content"] if isinstance(p, dict)):
                raise RuntimeError("CUDA error: device-side assert triggered")
        return super().generate_batch(conversations, params)


def test_one_conversation_failing_does_not_abort_its_batch():
    turns = ["Zoom.\n\n" + P.format_tool_call("crop_image_normalized", {"bbox_2d": [0.1, 0.1, 0.6, 0.6],
                                                                         "target_image": 1}), "\\boxed{4}"]
    image = photo_like(200, 150)
    tasks = [Task(question=f"q{i}", image=image) for i in range(4)] + [Task(question="poison", image=image)]
    done = []
    trajs = run_batch(FailsOn(turns, "poison"), tasks, config=TINY, on_done=lambda ep: done.append(ep.trajectory))
    assert [t.status for t in trajs] == ["done"] * 4 + ["error"]
    assert "CUDA error" in trajs[4].error and len(trajs[4].error) <= P.MAX_MESSAGE
    assert all(t.answer == "4" for t in trajs[:4]) and len(done) == 5


def test_a_generation_the_loop_cannot_take_ends_the_session_with_its_cause(tmp_path):
    """A backend stream that never yields its final Generation: the session row records why."""
    from app import Studio
    from app.ask import session as A

    class NoFinal(ReplayBackend):
        def stream(self, messages, params, cancel=None):
            yield "partial text"

    log = StudioLog(tmp_path / "studio.db")
    studio = Studio(log=log, data_dir=tmp_path, backend="replay")
    task = Task(question="q", image=photo_like(160, 120))
    for _, traj in A.run_session(studio, NoFinal(["x"]), task, A.AskSettings(backend="replay"), A.CancelEvent()):
        pass
    row = log.session(traj.id)
    assert row["status"] == "error" and row["error"] and "AttributeError" in row["error"]


def test_the_aspect_ratio_of_a_legal_crop_is_an_error_turn_then_the_episode_goes_on():
    wide = Image.new("RGB", (12000, 100), (30, 60, 90))
    turns = [P.format_tool_call("crop_image_normalized", {"bbox_2d": [0.0, 0.35, 0.99, 0.45], "target_image": 1}),
             "\\boxed{wide}"]
    traj = run_to_end(ReplayBackend(turns), Task(question="q", image=wide), config=TINY)
    assert traj.status == "done" and traj.answer == "wide" and "aspect ratio" in traj.steps[0].error


# ---- search and imports -----------------------------------------------------------------------------

@pytest.mark.parametrize("text,found", [('"', 1), ('""', 1), ("\x00", 1), ("\ud800", 1),  # no word left: no filter
                                        ("a\x00b", 0), ("NEAR(", 0), ("*", 0), ("a\" OR \"b", 0), ("x" * 5000, 0)])
def test_search_edge_inputs_never_raise(tmp_path, text, found):
    log = StudioLog(tmp_path / "s.db")
    traj = run_to_end(ReplayBackend(["It says WOOL. \\boxed{WOOL}"]), Task(question="what does it say", image=photo_like(160, 120)),
                      config=TINY, store=log.images)
    Recorder(log, "app").write(traj)
    rows, total = log.list_sessions(SessionFilter(text=text))
    assert total == len(rows) == found
    assert log.list_sessions(SessionFilter(text='wool "'))[1] == 1  # the word still matches


def test_hostile_imports_are_reported_per_file_and_a_retry_adds_no_copies(tmp_path):
    log = StudioLog(tmp_path / "db" / "studio.db")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"messages": [{"role": "user", "content": "What?"},
                                             {"role": "assistant", "content": "\\boxed{1}"}]}))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    bigint = tmp_path / "bigint.json"
    bigint.write_text('{"messages": [{"role": "user", "content": "q"}], "n": ' + "9" * 5000 + "}")
    huge = tmp_path / "huge.json"
    traj = run_to_end(ReplayBackend(["\\boxed{2}"]), Task(question="q", image=photo_like(160, 120)), config=TINY)
    d = traj.to_dict()
    d["created_at"] = 10 ** 400
    huge.write_text(json.dumps(d))
    paths = [str(good), str(deep), str(bigint), str(huge)]
    msg = I.import_files(log, paths)
    lines = msg.splitlines()
    assert lines[0] == "imported 1 trajectories", msg
    assert any(ln.startswith("- deep.json:") and "nested too deeply" in ln for ln in lines)
    assert any(ln.startswith("- bigint.json:") and "4300" in ln for ln in lines)
    assert any(ln.startswith("- huge.json:") for ln in lines)
    assert str(tmp_path) not in msg
    assert I.import_files(log, paths).splitlines()[0] == "imported 1 trajectories"  # the retry
    assert log.list_sessions()[1] == 1  # replaced, not doubled


# ---- storage ----------------------------------------------------------------------------------------

def test_a_read_only_db_path_names_the_path_and_the_cause(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions: use a file system that refuses everyone
        path = Path("/sys/studio-test/studio.db")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        path = ro / "sub" / "studio.db"
    with pytest.raises(StorageError) as e:
        open_log(path)
    msg = str(e.value)
    assert str(path) in msg and ("read-only" in msg or "cannot be opened" in msg) and "\n" not in msg
    out = subprocess.run([sys.executable, "app.py", "--backend", "replay", "--db", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.strip().splitlines()[-1] == msg and "Traceback" not in out.stderr


FULL_DISK = r"""
import resource, signal, sys
from pathlib import Path
from app import Studio
from app.ask import session as A
from app.shared.studio_log import StudioLog
data = Path(sys.argv[1])
studio = Studio(log=StudioLog(data / "studio.db"), data_dir=data, backend="replay", replay=sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as a full disk fails with ENOSPC
limit = max(f.stat().st_size for f in data.rglob("*") if f.is_file()) + 4096
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
last = None
for last in A.ask_stream(studio, sys.argv[2], "What does the sign say?", A.AskSettings(backend="replay"), "k"):
    pass
print("STATUS:", last[2])
"""


def test_a_full_disk_gives_a_one_line_message(tmp_path):
    photo = tmp_path / "photo.png"
    photo_like(900, 700, seed=3).save(photo)  # its stored PNG is far over the limit
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps(["\\boxed{WOOL}"]))
    data = tmp_path / "data"
    data.mkdir()
    StudioLog(data / "studio.db").close()
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(data), str(photo), str(turns)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    status = next((ln for ln in out.stdout.splitlines() if ln.startswith("STATUS:")), "")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "could not be saved" in status and "disk is full" in status and str(tmp_path) not in status, status
    assert not list((data / "images").rglob("*.tmp"))  # no half-written picture left behind
