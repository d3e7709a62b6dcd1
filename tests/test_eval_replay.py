"""`python -m core eval` end to end with the replay backend on every benchmark's fixture layout."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.sessionlog import SessionLog
from core.sessionquery import SessionFilter
from tests.test_eval_fixtures import make_infovqa, make_mvbench, make_tallyqa, make_tinyzoom, make_vstar

ROOT = Path(__file__).resolve().parents[1]
CROP = ('I will zoom in on the square.\n<tool_call>\n{"name": "crop_image_normalized", "arguments": '
        '{"bbox_2d": [0.1, 0.2, 0.5, 0.6], "target_image": 1}}\n</tool_call>')
FRAMES = 'Look closer.\n<tool_call>\n{"name": "select_frames", "arguments": {"target_frames": [1, 2]}}\n</tool_call>'
REPORT_KEYS = ("bench", "model", "backend", "tools", "n", "accuracy", "accuracy_ci95", "rapr", "accuracy_with_ops",
               "accuracy_without_ops", "mean_ops", "error_turn_rate", "tokens_per_item", "seconds_per_item",
               "by_category")


def turns(tmp_path: Path, name: str, texts: list[str]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(texts))
    return str(path)


def run_eval(*args) -> int:
    return main(["eval", "--quiet", *map(str, args)])


def read_items(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]


def test_vstar_end_to_end_with_session_log(tmp_path, capsys):
    data, db, out = make_vstar(tmp_path), tmp_path / "studio.db", tmp_path / "out"
    replay = turns(tmp_path, "t", [CROP, "The square is red. \\boxed{A}"])
    assert run_eval("--bench", "vstar", "--data", data, "--backend", "replay", "--replay", replay,
                    "--out", out, "--db", db, "--batch", 3) == 0
    assert "| accuracy | 50.0" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert all(k in report for k in REPORT_KEYS)
    assert (report["bench"], report["n"], report["accuracy"], report["rapr"], report["mean_ops"]) == \
        ("vstar", 4, 0.5, 1.0, 1.0)
    assert report["paper_7b"] == 84.3 and report["pixel_preset"] == "eval" and report["temperature"] == 0.6
    assert report["pixels"]["first_min"] == 401408 and report["pixels"]["first_max"] == 4014080
    assert set(report["by_category"]) == {"direct_attributes", "relative_position"}
    items = read_items(out)
    assert sorted(r["id"] for r in items) == ["vstar_0", "vstar_1", "vstar_2", "vstar_3"]
    r0 = next(r for r in items if r["id"] == "vstar_0")
    assert r0["correct"] and r0["prediction"] == "A" and r0["trajectory"]["steps"][0]["box_px"]
    assert (out / "report.md").exists() and "plotly" in (out / "report.html").read_text()
    assert json.loads((out / "progress.json").read_text()) == {"done": 4, "total": 4}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [3, 4] and all("time" in m for m in metrics)
    # every trajectory is in the Studio's session log, openable in the inspector
    log = SessionLog(db)
    rows, total = log.list_sessions(SessionFilter(client="eval"))
    assert total == 4 and {r["status"] for r in rows} == {"done"}
    traj = log.get_trajectory(rows[0]["id"])
    assert traj.meta["bench"] == "vstar" and traj.steps[0].tool == "crop_image_normalized"
    assert log.image_path(traj.media.image.sha) is not None and log.image_path(traj.steps[0].images[0].sha)
    # a re-run finds everything done: nothing new, same report, no duplicate sessions
    assert run_eval("--bench", "vstar", "--data", data, "--backend", "replay", "--replay", replay,
                    "--out", out, "--db", db) == 0
    assert len(read_items(out)) == 4 and log.list_sessions(SessionFilter(client="eval"))[1] == 4
    assert json.loads((out / "report.json").read_text())["accuracy"] == 0.5
    # the folder belongs to this run: another configuration is refused
    assert run_eval("--bench", "vstar", "--data", data, "--backend", "replay", "--replay", replay,
                    "--out", out, "--no-db", "--no-tools") == 2
    assert "holds another run" in capsys.readouterr().err


@pytest.mark.parametrize("bench,maker,texts,accuracy,rapr", [
    ("mvbench", make_mvbench, [FRAMES, "It is 0. \\boxed{A}"], 2 / 3, 1.0),
    ("tallyqa", make_tallyqa, ["I count two. \\boxed{2}"], 1 / 3, 0.0),
    ("infovqa", make_infovqa, ["Answer: New York"], 1 / 3, 0.0),
    ("tinyzoom", make_tinyzoom, [CROP, "\\boxed{101}"], 0.2, 1.0),  # video: crops overview frame 1
])
def test_each_benchmark_end_to_end(tmp_path, bench, maker, texts, accuracy, rapr):
    data = maker(tmp_path) if bench != "tinyzoom" else maker(tmp_path, n=5)
    out = tmp_path / "out"
    assert run_eval("--bench", bench, "--data", data, "--backend", "replay", "--replay",
                    turns(tmp_path, "t", texts), "--out", out, "--no-db", "--json") == 0
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert report["rapr"] == pytest.approx(rapr)
    assert report["status"] == {"done": report["n"]}
    if bench == "tinyzoom":
        assert set(report["by_category"]) == {"zoom_needed", "zoom_optional", "counting", "relative", "video"}
        assert report["by_category"]["zoom_needed"]["accuracy"] == 0.0
        assert report["by_category"]["zoom_optional"]["accuracy"] == 1.0  # answer 101
    if bench == "mvbench":
        items = {r["id"]: r for r in read_items(out)}
        assert items["mv_0"]["trajectory"]["steps"][0]["frames"] == [1, 2]
        assert items["mv_file"]["trajectory"]["media"]["kind"] == "video" and not items["mv_file"]["correct"]


def test_samples_and_limit(tmp_path):
    out = tmp_path / "out"
    assert run_eval("--bench", "vstar", "--data", make_vstar(tmp_path), "--backend", "replay", "--replay",
                    turns(tmp_path, "t", ["\\boxed{B}"]), "--out", out, "--no-db", "--samples", 2, "--limit", 3,
                    "--temperature", 0.7) == 0
    items = read_items(out)
    assert sorted((r["id"], r["sample"]) for r in items) == [(f"vstar_{i}", k) for i in range(3) for k in (0, 1)]
    report = json.loads((out / "report.json").read_text())
    assert (report["n"], report["n_items"], report["samples"], report["temperature"]) == (3, 6, 2, 0.7)


def test_backend_failure_leaves_items_for_a_rerun(tmp_path, capsys):
    """Replay that runs out of turns fails in the backend: those items are not recorded, exit 1, re-run retries."""
    data, out = make_vstar(tmp_path, n=2), tmp_path / "out"
    short = turns(tmp_path, "short", [CROP])
    assert run_eval("--bench", "vstar", "--data", data, "--backend", "replay", "--replay", short,
                    "--out", out, "--no-db") == 1
    assert "2 items failed in the backend" in capsys.readouterr().err
    assert (out / "items.jsonl").read_text() == ""
    report = json.loads((out / "report.json").read_text())
    assert report["n_failed"] == 2 and not report["complete"]


def test_clear_errors_from_the_command_line(tmp_path):
    data = make_vstar(tmp_path, n=2)
    import pandas as pd

    pd.read_parquet(data / "vstar.parquet").drop(columns=["answer"]).to_parquet(data / "vstar.parquet")
    out = subprocess.run([sys.executable, "-m", "core", "eval", "--bench", "vstar", "--data", str(data),
                          "--backend", "replay", "--replay", "x.json", "--no-db"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "missing column 'answer'" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "core", "eval", "--bench", "infovqa", "--no-db"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "needs --data" in out.stderr


def test_report_figure_for_the_app(tmp_path):
    from core.evaluation import report_figure

    out = tmp_path / "out"
    run_eval("--bench", "tinyzoom", "--data", make_tinyzoom(tmp_path, n=5), "--backend", "replay", "--replay",
             turns(tmp_path, "t", ["\\boxed{100}"]), "--out", out, "--no-db")
    fig = report_figure(json.loads((out / "report.json").read_text()))
    assert fig.layout.height and len(fig.data) == 4
    assert list(fig.data[0].x)[0].startswith("all (n=5)") and fig.data[0].y[0] == pytest.approx(20.0)
