"""The RL collapse alarms fire at the right step of a metrics stream, and not before."""
from __future__ import annotations

import json

from app.training import charts as C
from app.training.alarms import AlarmSettings, collapse_alarms
from app.training.watch import rl_alarms


def stream(raprs, filtered=None):
    filtered = filtered or [0.0] * len(raprs)
    return [{"step": i + 1, "rapr": r, "frac_filtered": f, "loss": 0.1} for i, (r, f) in enumerate(zip(raprs, filtered))]


def test_rapr_alarm_fires_on_the_kth_step_below_h_over_3():
    rows = stream([0.3, 0.25, 0.09, 0.05, 0.0, 0.02, 0.01, 0.0, 0.0])  # below 0.1 from step 3
    alarms = collapse_alarms(rows, AlarmSettings(H=0.3, k=5))
    assert [(a.kind, a.step) for a in alarms] == [("rapr", 7)]
    assert collapse_alarms(rows[:6], AlarmSettings(H=0.3, k=5)) == []  # not before the 5th low step


def test_a_recovery_resets_the_count_and_rearms_the_alarm():
    low, ok = [0.0] * 3, [0.3]
    assert collapse_alarms(stream(low + ok + low), AlarmSettings(k=4)) == []
    alarms = collapse_alarms(stream(low + low + ok + low + low), AlarmSettings(k=4))
    assert [a.step for a in alarms] == [4, 11]


def test_zero_advantage_alarm_fires_where_the_share_first_reaches_the_threshold():
    rows = stream([0.3] * 6, filtered=[0.2, 0.5, 0.85, 0.9, 0.3, 1.0])
    alarms = collapse_alarms(rows, AlarmSettings(zero_advantage=0.8))
    assert [(a.kind, a.step) for a in alarms] == [("zero_advantage", 3), ("zero_advantage", 6)]


def test_an_rl_job_reads_its_h_and_marks_the_curves(tmp_path):
    (tmp_path / "rl_config.json").write_text(json.dumps({"H": 0.6}))
    rows = stream([0.15] * 5)  # above 0.1 but below 0.6 / 3 = 0.2
    job = {"id": "j", "kind": "rl", "out_dir": str(tmp_path)}
    assert [a.step for a in rl_alarms(job, rows)] == [5]
    assert rl_alarms({**job, "kind": "sft"}, rows) == []
    fig = C.job_curves(rows, marks=[(5, "rapr")])
    assert any(shape.x0 == 5 for shape in fig.layout.shapes)
