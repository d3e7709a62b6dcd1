"""The harness on the shipped tiny model (real forward passes on CPU), TinyZoom format, tools on and off."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.cli import main
from core.sessionlog import SessionLog
from core.sessionquery import SessionFilter

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "assets" / "pixel-reasoner-tiny"
EXAMPLES = ROOT / "assets" / "examples"

pytestmark = pytest.mark.skipif(not (MODEL / "model.safetensors").exists(), reason="shipped tiny model missing")


def tinyzoom_from_examples(root: Path) -> Path:
    """The app's example gallery (TinyZoom items outside every split) written as a TinyZoom test split."""
    folder = root / "tinyzoom"
    (folder / "originals").mkdir(parents=True)
    lines = []
    for i, e in enumerate(json.loads((EXAMPLES / "examples.json").read_text())):
        shutil.copy(EXAMPLES / e["media"], folder / "originals" / e["media"])
        task = {"question": e["question"], "answer": e["answer"], "category": e["category"],
                "media": f"originals/{e['media']}", "kind": "video" if e["media"].endswith(".mp4") else "image"}
        lines.append(json.dumps({"id": f"example-{i}", "messages": [], "meta": {"category": e["category"], "task": task}}))
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_tinyzoom_with_and_without_tools_on_the_tiny_model(tmp_path):
    data, db = tinyzoom_from_examples(tmp_path), tmp_path / "studio.db"
    out_tools, out_plain = tmp_path / "tools", tmp_path / "notools"
    assert main(["eval", "--bench", "tinyzoom", "--data", str(data), "--model", str(MODEL), "--out", str(out_tools),
                 "--db", str(db), "--batch", "5", "--quiet"]) == 0
    report = json.loads((out_tools / "report.json").read_text())
    # the checkpoint's studio.json picks the settings: tiny preset, greedy, short turns
    assert (report["pixel_preset"], report["settings_from"], report["temperature"], report["max_new_tokens"]) == \
        ("tiny", "studio.json", 0.0, 128)
    assert report["n"] == 5 and report["complete"] and report["backend"] == "transformers"
    assert set(report["by_category"]) == {"zoom_needed", "zoom_optional", "counting", "video"}
    for cat in report["by_category"].values():
        assert set(cat) == {"n", "accuracy", "rapr", "no_tool_share", "clean_tool_call_share", "mean_ops"}
    assert report["tokens_per_item"] > 0 and report["seconds_per_item"] > 0
    # every answer has a confidence, every picture (the video's aside) the familiarity check
    assert report["calibration"]["n"] == 5 and sum(b["n"] for b in report["calibration"]["bins"]) == 5
    assert report["unfamiliar_share"] == 0.0
    assert "Calibration (5 items" in (out_tools / "report.md").read_text()
    items = [json.loads(x) for x in (out_tools / "items.jsonl").read_text().splitlines()]
    assert [r["familiar"] is None for r in items].count(True) == 1  # the video
    assert len(items) == 5 and all(r["trajectory"]["steps"] for r in items)
    assert all(r["status"] in ("done", "max_ops", "max_tokens", "max_images") for r in items)

    assert main(["eval", "--bench", "tinyzoom", "--data", str(data), "--model", str(MODEL), "--out", str(out_plain),
                 "--db", str(db), "--no-tools", "--batch", "5", "--quiet"]) == 0
    plain = json.loads((out_plain / "report.json").read_text())
    assert plain["tools"] is False and plain["rapr"] == 0.0 and plain["no_tool_share"] == 1.0
    # both runs are in the session log the app reads
    log = SessionLog(db)
    rows, total = log.list_sessions(SessionFilter(client="eval", limit=20))
    assert total == 10 and {bool(r["tools_enabled"]) for r in rows} == {True, False}
