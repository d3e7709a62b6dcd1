"""`python -m core ask` as a user runs it: JSON on stdout, clear errors, exit codes."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ask(*args):
    return subprocess.run([sys.executable, "-m", "core", "ask", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_ask_json_with_replay(tmp_path, photo_path):
    from tests.test_protocol import RELEASED_OUTPUT
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps([RELEASED_OUTPUT, "The sign shows a sheep. \\boxed{B}"]))
    out = ask("--image", str(photo_path), "--question", "What animal?", "--backend", "replay",
              "--replay", str(turns), "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["answer"] == "B" and len(d["steps"]) == 2
    s = d["steps"][0]
    assert s["tool"] == "crop_image_normalized" and s["error"] is None
    assert s["arguments"] == {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1}
    assert s["box_px"] == [0, 59, 325, 294] and s["source_box_px"] == [0, 60, 320, 300]  # on the 812x588 view
    assert d["steps"][1]["tool"] is None
    assert "step 1" in out.stderr  # steps streamed to the terminal (stderr when --json)


def test_ask_video_frames_in_json(tmp_path, video_path):
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps(['<tool_call>\n{"name": "select_frames", "arguments": {"target_frames": [3, 4]}}\n'
                                 '</tool_call>', "\\boxed{5}"]))
    out = ask("--video", str(video_path), "--question", "Which?", "--backend", "replay", "--replay", str(turns), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["steps"][0]["frames"] == [3, 4]


def test_ask_clear_errors(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = ask("--image", str(bad), "--question", "Q", "--backend", "replay", "--replay", "x.json")
    assert out.returncode == 2 and "not a readable image" in out.stderr and "Traceback" not in out.stderr
    out = ask("--image", str(bad), "--video", "v.mp4", "--question", "Q")
    assert out.returncode == 2 and "exactly one of --image or --video" in out.stderr


def test_ask_needs_neither_sqlite_utils_nor_plotly(tmp_path, photo_path):
    """A GPU box with only the model stack installed can still run `core ask` (the eval and app
    extras are imported where they are used)."""
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps(["\\boxed{B}"]))
    code = ("import sys; sys.modules['sqlite_utils'] = None; sys.modules['plotly'] = None; "
            "from core.cli import main; sys.exit(main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, "ask", "--image", str(photo_path), "--question", "Q?",
                          "--backend", "replay", "--replay", str(turns), "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["answer"] == "B"
