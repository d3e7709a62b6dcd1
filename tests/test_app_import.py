"""Inspect's import: `python -m core ask --json` output (real CLI), message-list records as in the
released data and rollout dumps, rendered prompt/response dumps, and records whose pictures are gone.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from app.inspecting import sessions as I
from app.shared.importers import import_files
from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import DiskImageStore, load_image
from core.operations import PixelLimits
from core.protocol import GUIDELINES, format_tool_call, system_prompt, tools_for
from core.sessionlog import SessionLog
from core.records import trajectory_to_sft_record

ROOT = Path(__file__).resolve().parents[1]
TAG = ROOT / "assets" / "examples" / "zoom_needed_101.png"
TURNS = ["Zoom on the tag.\n\n" + format_tool_call("crop_image_normalized",
                                                    {"bbox_2d": [0.44, 0.66, 0.48, 0.72], "target_image": 1}),
         "It reads 3. \\boxed{3}"]


def test_import_cli_json_message_lists_and_rendered_dumps(tmp_path):
    log = SessionLog(tmp_path / "db" / "studio.db")
    # 1. the real CLI's --json output
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps(TURNS))
    out = subprocess.run([sys.executable, "-m", "core", "ask", "--image", str(TAG), "--question", "Tag?",
                          "--backend", "replay", "--replay", str(turns), "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    cli = tmp_path / "cli.json"
    cli.write_text(out.stdout)

    # 2. message-list records (the released data's shape) with relative image paths, as JSON lines
    dump = tmp_path / "dump"
    store = DiskImageStore(dump / "images")
    traj = run_to_end(ReplayBackend(TURNS), Task(question="What is on the tag?", image=load_image(TAG), answer="3"),
                      config=LoopConfig(pixels=PixelLimits.preset("tiny")), store=store)
    rec = trajectory_to_sft_record(traj, store, relative_to=dump)
    released = {"qid": "q-17", "message_list": rec["messages"], "answer": "3", "model": "PixelReasoner-RL-v1"}
    (dump / "rollouts.jsonl").write_text(json.dumps(released) + "\n")

    # 3. a rendered verl-style dump: prompt + response in chat markup, images listed beside
    shutil.copy(TAG, dump / "tag.png")
    prompt = (f"<|im_start|>system\n{system_prompt(tools_for(False))}<|im_end|>\n<|im_start|>user\n"
              f"<|vision_start|><|image_pad|><|vision_end|>What is on the tag?{GUIDELINES['vcot']}<|im_end|>\n"
              "<|im_start|>assistant\n")
    response = (f"{TURNS[0]}<|im_end|>\n<|im_start|>user\n\nHere is the cropped image (Image Size: 56x56):"
                f"<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n{TURNS[1]}<|im_end|>")
    (dump / "verl.json").write_text(json.dumps([{"prompt": prompt, "response": response, "images": ["tag.png"],
                                                 "gt": "3"}]))

    # 4. a record whose picture is gone: kept as text
    gone = {"messages": [{"role": "user", "content": [{"type": "image", "image": "missing.png"},
                                                      {"type": "text", "text": "Tag?"}]},
                         {"role": "assistant", "content": TURNS[0]},
                         {"role": "user", "content": "\nHere is the cropped image (Image Size: 56x56):"},
                         {"role": "assistant", "content": TURNS[1]}]}
    (dump / "gone.json").write_text(json.dumps(gone))
    (dump / "junk.json").write_text(json.dumps({"hello": 1}))

    msg = import_files(log, [str(cli), str(dump / "rollouts.jsonl"), str(dump / "verl.json"),
                               str(dump / "gone.json"), str(dump / "junk.json")])
    assert msg.startswith("imported 4 trajectories") and "junk.json: not a trajectory" in msg
    rows = {r["question"] + "|" + (r["model"] or ""): r for r in log.list_sessions()[0]}
    assert len(rows) == 4
    by_model = {r["model"]: r for r in rows.values()}
    released_row = by_model["PixelReasoner-RL-v1"]
    assert released_row["client"] == "import" and released_row["n_ops"] == 1 and released_row["correct"] == 1
    t = log.get_trajectory(released_row["id"])
    assert t.question == "What is on the tag?" and t.guideline == "vcot" and t.meta["source_id"] == "q-17"
    assert t.steps[0].box_px and log.image_path(t.steps[0].images[0].sha)  # re-executed: a real crop
    imported = [r for r in rows.values() if r["model"] == "import"]
    verl = next(r for r in imported if r["ground_truth"] == "3" and r["n_ops"] == 1)
    vt = log.get_trajectory(verl["id"])
    assert vt.steps[0].source_box_px and vt.answer == "3" and vt.steps[1].text == TURNS[1]
    text_only = next(r for r in imported if r["ground_truth"] is None and r["question"] == "Tag?"
                     and r["backend"] == "import")
    tt = log.get_trajectory(text_only["id"])
    assert tt.steps[0].tool == "crop_image_normalized" and not tt.steps[0].images and tt.answer == "3"
    assert tt.meta["pictures"] == "missing: text only"
    cli_row = next(r for r in rows.values() if r["backend"] == "replay")
    assert cli_row["n_ops"] == 1 and cli_row["answer"] == "3"
    # each opens in the Inspect view
    for r in rows.values():
        assert I.session_view(log, r["id"])["header"]
