"""The Annotate tab through the real server (gradio_client): queue, open, save labels and corrections
into SQLite, clear errors, delete, export preview and export; plus the overlay and IoU helpers.
"""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from PIL import Image

from app.annotate import labeling as A
from app.shared.studio_log import StudioLog
from tests.test_export import ANSWER_7, GOOD_BOX, WRONG, logged

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from app import Studio
    from app.ui import build_app, launch_kwargs

    data = tmp_path_factory.mktemp("annotate")
    log = StudioLog(data / "studio.db")
    ids = [logged(log, [WRONG, ANSWER_7]), logged(log, [ANSWER_7.replace("7", "3")], question="Tag?")]
    studio = Studio(log=log, data_dir=data, backend="replay")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=port, **launch_kwargs())
    yield Client(demo.local_url, verbose=False), studio, ids
    demo.close()


def test_queue_open_save_and_export(server, tmp_path):
    client, studio, (sid, other) = server
    log = studio.log
    queued_sid, info, queue = client.predict("unannotated", "any", "", api_name="/annotate_queue")
    assert queued_sid == sid and "1 of 2" in info  # oldest first
    assert [r[1:] for r in queue["data"]] == [[sid, "What is written on the blue tag?", "unlabelled"],
                                              [other, "Tag?", "unlabelled"]]
    out = client.predict(sid, api_name="/annotate_open")
    header, image, target, step_text = out[0], out[1], out[2], out[4]
    assert "What is written on the blue tag?" in header and "❌" in header
    shown = Image.open(image)
    assert shown.size == (1000, round(996 * 1000 / 1180))  # the original, scaled to 1000 px
    assert target["value"] == A.WHOLE and "final answer: 7" in step_text
    assert [c[0] for c in target["choices"]] == [A.WHOLE, "step 1 · crop_image_normalized", "step 2 · answer"]

    msg, table = client.predict(sid, "step 1 · crop_image_normalized", "wrong box", "the tag is lower", "",
                                *GOOD_BOX, "", "", "ann", api_name="/annotate_save")
    assert msg.startswith("saved annotation") and table["data"][0][1:3] == ["step 1", "wrong box"]
    msg, table = client.predict(sid, A.WHOLE, "wrong answer", "", "3", None, None, None, None, "", "", "ann",
                                api_name="/annotate_save")
    assert msg.startswith("saved") and len(table["data"]) == 2
    rows = log.list_annotations(sid)
    assert [(r["step_idx"], r["label"], r["corrected_box"], r["corrected_answer"], r["annotator"]) for r in rows] == [
        (0, "wrong box", GOOD_BOX, None, "ann"), (None, "wrong answer", None, "3", "ann")]

    # clear messages, nothing written
    for args, expected in [((sid, A.WHOLE, None, "", "", None, None, None, None, "", "", ""), "nothing to save"),
                           ((sid, A.WHOLE, "other", "", "", 0.5, 0.5, 0.4, 0.6, "", "", ""), "x0 < x1"),
                           ((sid, A.WHOLE, "other", "", "", 0.1, None, None, None, "", "", ""), "all four numbers"),
                           ((sid, A.WHOLE, "wrong frame", "", "", None, None, None, None, "3, x", "", ""), "whole numbers"),
                           (("nope", A.WHOLE, "other", "c", "", None, None, None, None, "", "", ""), "no session")]:
        msg, _ = client.predict(*args, api_name="/annotate_save")
        assert msg.startswith("⚠️") and expected in msg, msg
    assert len(log.list_annotations()) == 2

    # a third annotation, deleted again
    msg, table = client.predict(other, A.WHOLE, "other", "no zoom needed here", "", None, None, None, None, "", "",
                                "ann", api_name="/annotate_save")
    aid = table["data"][0][0]
    table = client.predict(other, aid, api_name="/annotate_delete")
    assert table["data"] in ([], [["", "", "", "", "", "", ""]]) or not any(r[0] == aid for r in table["data"])
    assert log.list_annotations(other) == []
    queued_sid, info, queue = client.predict("annotated", "any", "", api_name="/annotate_queue")
    assert queued_sid == sid and "1 of 1" in info and queue["data"][0][3] == "labelled"

    md, preview = client.predict(str(tmp_path / "x"), api_name="/export_preview")
    assert "**1** would become SFT records" in md
    assert preview["data"][0][5] == "correction → corrected answer"
    md, _, _ = client.predict(str(tmp_path / "export"), api_name="/export")  # outside data/exports/: refused
    assert md.startswith("⚠️") and "data/exports/" in md and not (tmp_path / "export").exists()
    folder = studio.data_dir / "exports" / "export"
    md, _, next_folder = client.predict("export", api_name="/export")
    assert "Exported **1** SFT records (1 with corrections) and **2** labels" in md and next_folder != str(folder)
    rec = json.loads((folder / "train.jsonl").read_text())
    assert rec["train_turns"] == [True, True] and rec["meta"]["source_session"] == sid
    md, _, _ = client.predict(str(folder), api_name="/export")
    assert "not empty" in md
    _, _, queue = client.predict("all", "any", "", api_name="/annotate_queue")
    assert {r[1]: r[3] for r in queue["data"]} == {sid: "exported", other: "unlabelled"}


def test_a_wrong_box_label_without_its_box_is_refused_at_save(server):
    """Bug: label "wrong box", one corner clicked ("second corner…"), Save -> "saved annotation 1" with no
    corrected box, and the export turned it into an SFT record anyway."""
    client, studio, (sid, _) = server
    before = len(studio.log.list_annotations())
    client.predict(sid, api_name="/annotate_open")  # the target choices are the open session's steps
    step1 = "step 1 · crop_image_normalized"
    msg, _ = client.predict(sid, step1, "wrong box", "the tag is lower", "", None, None, None, None, "", "", "ann",
                            api_name="/annotate_save")  # one corner clicked fills none of the four numbers
    assert msg.startswith("⚠️") and "needs the corrected box" in msg and "both of its corners" in msg, msg
    assert len(studio.log.list_annotations()) == before


def test_a_correction_that_does_not_fit_its_target_is_refused_and_the_export_stays_clean(tmp_path):
    """Bug: values typed for step 1 (box, answer) were saved on step 2 (the answer) too, and the export
    trained a turn `The tag reads 7. \\boxed{7} <tool_call>{crop…}</tool_call>`."""
    from app import Studio
    from app.annotate import export as E
    from app.ui import build_app, launch_kwargs

    log = StudioLog(tmp_path / "studio.db")
    sid = logged(log, [WRONG, ANSWER_7])
    demo = build_app(Studio(log=log, data_dir=tmp_path, backend="replay"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=port, **launch_kwargs())
    try:
        client = Client(demo.local_url, verbose=False)
        client.predict(sid, api_name="/annotate_open")  # the target choices are the open session's steps
        step1, step2 = "step 1 · crop_image_normalized", "step 2 · answer"
        for target, answer, box, expected in [(step1, "7", GOOD_BOX, "a corrected answer does not fit step 1"),
                                              (step2, "", GOOD_BOX, "a corrected box does not fit step 2"),
                                              (A.WHOLE, "", GOOD_BOX, "a corrected box does not fit whole")]:
            msg, _ = client.predict(sid, target, "wrong box", "c", answer, *box, "", "", "ann",
                                    api_name="/annotate_save")
            assert msg.startswith("⚠️") and expected in msg, msg
        assert log.list_annotations(sid) == []
        msg, _ = client.predict(sid, step1, "wrong box", "the tag is lower", "", *GOOD_BOX, "", "", "ann",
                                api_name="/annotate_save")
        assert msg.startswith("saved"), msg
        msg, _ = client.predict(sid, step2, "format error", "", "", None, None, None, None, "",
                                "The tag reads 3. \\boxed{3}", "ann", api_name="/annotate_save")
        assert msg.startswith("saved"), msg
    finally:
        demo.close()
    second = log.list_annotations(sid)[-1]
    assert (second["comment"], second["corrected_answer"], second["corrected_box"]) == (None, None, None)
    assert E.export_annotated(log, tmp_path / "export").records == 1
    rec = json.loads((tmp_path / "export" / "train.jsonl").read_text())
    turns = [m for m in rec["messages"] if m["role"] == "assistant"]
    texts = [t["content"] if isinstance(t["content"], str) else " ".join(c.get("text", "") for c in t["content"])
             for t in turns]
    assert rec["train_turns"] == [True, True]
    assert texts[0].startswith("The tag must be at the top") and "[0.7, 0.05, 0.85, 0.2]" not in texts[0]
    assert "<tool_call>" in texts[0] and "\\boxed" not in texts[0] and "0.44" in texts[0]
    assert texts[1] == "The tag reads 3. \\boxed{3}"


def test_overlay_draws_the_corrected_box_and_iou_compares_padded_boxes(server):
    _, studio, (sid, _) = server
    log = studio.log
    traj = log.get_trajectory(sid)
    original = Image.open(log.image_path(traj.media.image.sha))
    img = np.asarray(A.overlay(original, traj, 0, GOOD_BOX))
    h, w = img.shape[:2]
    x0 = round(GOOD_BOX[0] * w)
    y_mid = round((GOOD_BOX[1] + GOOD_BOX[3]) / 2 * h)
    assert tuple(img[y_mid, x0 + 1]) == A.CORRECTED_COLOR
    same = A.box_iou(traj, 0, [0.7, 0.05, 0.85, 0.2], original.size)  # the model's own box
    assert "**1.00**" in same
    assert "**0.00**" in A.box_iou(traj, 0, GOOD_BOX, original.size)
    assert A.box_iou(traj, 1, GOOD_BOX, original.size).startswith("the model's step has no box")
    assert A.step_of("step 3 · crop_image_normalized") == 2 and A.step_of(A.WHOLE) is None
    assert A.parse_frames("3, 7 9") == [3, 7, 9] and A.parse_frames("") is None
