"""experiments/corrections_teach.py end to end at tiny size: a real failure family, the embedded model,
the Annotate tab's records, the Studio's export, a one-step fine-tune, the paired report."""
from __future__ import annotations

import json
import re
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
