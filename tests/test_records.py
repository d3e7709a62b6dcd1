"""The typed task of a record (`meta.task`): what synth and export write is what eval and RL read."""
from __future__ import annotations

import pytest

from core.records import DataError, TaskRecord


def test_a_task_round_trips_through_its_dict_and_leaves_unset_options_out():
    task = TaskRecord("What is written on the red tag?", "7", "zoom_needed", "originals/a.png",
                      target=[0.1, 0.2, 0.3, 0.4])
    d = task.to_dict()
    assert d == {"question": "What is written on the red tag?", "answer": "7", "category": "zoom_needed",
                 "media": "originals/a.png", "kind": "image", "target": [0.1, 0.2, 0.3, 0.4]}
    assert TaskRecord.from_meta({"task": d}, "x") == task


def test_a_record_without_a_task_or_with_a_missing_key_gets_a_clear_error():
    with pytest.raises(DataError, match=r"^test.jsonl:3: missing meta.task \("):
        TaskRecord.from_meta({"category": "other"}, "test.jsonl:3")
    with pytest.raises(DataError, match=r"^test.jsonl:4: missing meta.task.media$"):
        TaskRecord.from_meta({"task": {"question": "q", "answer": "a", "category": "c", "kind": "image"}}, "test.jsonl:4")
