"""experiments/robust_curve.py: the retrain's learning curve, tabulated from what `core eval` and
`train shift-report` write (their report formats, percentages from fractions)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_checkpoints_become_rows_in_step_order(tmp_path):
    for step, acc in ((1280, 0.7), (224, 0.5)):
        own = tmp_path / f"own-{step}"
        own.mkdir()
        own.joinpath("report.json").write_text(json.dumps({"accuracy": acc, "by_category": {
            "zoom_needed": {"n": 119, "accuracy": 0.748}, "counting": {"n": 33, "accuracy": 0.0909}}}))
    shifts = tmp_path / "shifts-1280"
    shifts.mkdir()
    shifts.joinpath("report.md").write_text("| table |\n\npooled zoom-needed 52% (48–56) of 792, bar 75%: NOT met\n"
                                            "lowest shift canvas_4200x1800 4%, bar 50%: NOT met\n")
    out = subprocess.run([sys.executable, "experiments/robust_curve.py", "--evals", str(tmp_path), "--out",
                          str(tmp_path / "curve.md")], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| 2") or line.startswith("| 1")]
    assert rows == ["| 224 (1,792 passes) | 50.0 | 74.8 | 9.1 | – | – |",
                    "| 1280 (10,240 passes) | 70.0 | 74.8 | 9.1 | 52% (48–56) | canvas_4200x1800 4% |"]
    assert (tmp_path / "curve.md").read_text() == out
