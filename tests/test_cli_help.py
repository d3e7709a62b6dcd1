"""What a newcomer meets at the command line: every option of `core ask` explained, `train --help`
with a line per command, `train synth --help` with help on each option, and the corrections config
run by hand saying in one line what data it needs."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.cli import build_parser
from core.records import DataError, newest_dataset

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_every_ask_option_has_help():
    ask = build_parser()._subparsers._group_actions[0].choices["ask"]
    bare = [a.option_strings[-1] for a in ask._actions if a.option_strings and not a.help]
    assert bare == []


def test_eval_help_points_to_a_page_that_exists():
    ev = build_parser()._subparsers._group_actions[0].choices["eval"]
    assert "docs/evaluation.md" in ev.description and (ROOT / "docs" / "evaluation.md").is_file()


def test_train_help_lists_each_command_with_a_line():
    out = run("-m", "train", "--help")
    assert out.returncode == 0
    for name in ("synth", "sft", "rl", "vision", "shift-report", "familiarity"):
        line = next(l for l in out.stdout.splitlines() if l.strip().startswith(name + " "))
        assert len(line.split(maxsplit=1)[1]) > 20, line


def test_synth_help_explains_every_option():
    out = run("-m", "train", "synth", "--help")
    assert out.returncode == 0
    for option in ("--train", "--validation", "--test", "--seed", "--closeups", "--workers", "--correction-rate"):
        block = out.stdout.split(option, 1)[1].split("\n  --", 1)[0]
        assert len(block.split()) > 3, option


def test_the_corrections_config_without_an_export_is_one_clear_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "train", "sft", "--config", "configs/sft_corrections.json",
                          f"data={tmp_path / 'exports'}", "--out", str(tmp_path / "run")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: ") and "data=" in out.stderr


def test_a_folder_of_exports_means_the_newest_one(tmp_path):
    for name in ("annotations-1", "annotations-2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.jsonl").write_text("{}\n")
    os.utime(tmp_path / "annotations-1" / "train.jsonl", (time.time() + 10, time.time() + 10))
    assert newest_dataset(tmp_path) == tmp_path / "annotations-1"
    assert newest_dataset(tmp_path / "annotations-2") == tmp_path / "annotations-2"
    with pytest.raises(DataError, match="give data="):
        newest_dataset(tmp_path / "none")
