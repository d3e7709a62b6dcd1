"""experiments/corrections_teach.py end to end at tiny size: a real failure family, the embedded model,
the Annotate tab's records, the Studio's export, a one-step fine-tune, the paired report."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "corrections_teach.py"
LAST = re.compile(r"^corrections teach: gain [+-]\d+\.\d points \[-?\d+\.\d, -?\d+\.\d\] on \d+ held-out, "
                  r"own split \d+\.\d -> \d+\.\d, fine-tune \d+ s$")


def teach(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from train.synth.build import BuildConfig, build, build_suite

    root = tmp_path_factory.mktemp("teach")
    build_suite(root / "families", per_shift=6, names=["tag_corner"], categories=["zoom_needed"])
    build(BuildConfig(out=str(root / "own"), train=3, validation=0, test=3, seed=0, progress=False))
    return root


def test_the_script_corrects_exports_finetunes_and_reports(folders, tmp_path):
    out = tmp_path / "out"
    done = teach("--family", str(folders / "families" / "tag_corner"), "--n", "2", "--out", str(out),
                 "--minutes", "0.5", "--heldout", "3", "--own", str(folders / "own"), "--mix", "2",
                 "--set", "max_steps=1", "--batch", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert LAST.match(last), last
    report = json.loads((out / "report.json").read_text())
    for key in ("n_corrections", "heldout_n", "before", "after", "gain", "gain_ci95", "own_before", "own_after",
                "finetune_seconds"):
        assert key in report, key
    assert report["heldout_n"] == 3 and report["own_n"] == 3 and 1 <= report["n_corrections"] <= 2
    assert report["mixed_in"] == 2 and report["finetune_seconds"] > 0
    rows = [json.loads(line) for line in (out / "export" / "labels.jsonl").read_text().splitlines()]
    assert {r["annotator"] for r in rows} == {"corrections_teach"}
    assert any(r["label"] == "wrong box" and r["corrected_box"] for r in rows)  # drawn around the target
    assert all(r["corrected_answer"] == r["ground_truth"] for r in rows if r["step_idx"] is None)


def test_bad_input_is_one_clear_line(tmp_path):
    done = teach("--family", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.strip().startswith("error:") and "test.jsonl" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_crop_covers_the_target_when_it_holds_nine_tenths_of_it():
    sys.path.insert(0, str(ROOT / "experiments"))
    from corrections_teach import covers, heldout_size

    assert covers([0, 0, 50, 50], [0.0, 0.0, 0.5, 0.5], (100, 100))
    assert not covers([0, 0, 40, 50], [0.0, 0.0, 0.5, 0.5], (100, 100))
    assert (heldout_size(300, None), heldout_size(150, None), heldout_size(20, None), heldout_size(20, 5)) == (
        150, 100, 10, 5)
    with pytest.raises(ValueError, match="--heldout"):
        heldout_size(20, 20)


def test_the_curve_runs_the_start_model_once_and_one_point_per_size_and_budget(folders, tmp_path):
    out = tmp_path / "curve"
    teach_args = f"--heldout 3 --own {folders / 'own'} --mix 2 --set max_steps=1 --batch 8"
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "corrections_curve.py"), "--family",
                           str(folders / "families" / "tag_corner"), "--out", str(out), "--ns", "1,2", "--minutes",
                           "0.5", "--minutes-list", "0.3", "--n-for-minutes", "1", "--args", teach_args],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    curve = json.loads((out / "curve.json").read_text())
    assert [p["asked_n"] for p in curve["by_corrections"]] == [1, 2]
    assert [(p["asked_n"], p["minutes"]) for p in curve["by_minutes"]] == [(1, 0.3), (1, 0.5)]
    start = (out / "start" / "eval-start-family" / "items.jsonl").read_text()
    for name in ("n1-m0.5", "n2-m0.5", "n1-m0.3"):  # every point scored against the same start
        assert (out / name / "eval-start-family" / "items.jsonl").read_text() == start
    assert sum(bool(LAST.match(line)) for line in done.stdout.splitlines()) == 3  # one summary per point
    assert "| 2 | 0.5 (" in (out / "curve.md").read_text()
    if shutil.which("chromium"):
        assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
