"""The run harness: one config base whose fields all carry help, one loader, one command line."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from train.rl import RLRunConfig
from train.run import RunConfig, TrainerRunConfig
from train.sft import SFTRunConfig
from train.vision import VisionRunConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = (SFTRunConfig, RLRunConfig, VisionRunConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_of_every_config_has_help(cls):
    assert issubclass(cls, RunConfig)
    missing = [f.name for f in fields(cls) if not cls.help_for(f.name)]
    assert missing == []


def test_a_subclass_default_keeps_the_base_help():
    assert SFTRunConfig().out == "runs/sft_tiny" and RLRunConfig().out == "runs/rl_tiny"
    assert SFTRunConfig.help_for("out") == RunConfig.help_for("out")
    assert RLRunConfig.help_for("grad_accum") == TrainerRunConfig.help_for("grad_accum")


def test_json_config_and_key_value_overrides_load_and_unknown_keys_are_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"_comment": "x", "learning_rate": 0.5, "repeat": {"video": 2}}))
    cfg = SFTRunConfig.from_file(path, ["max_steps=3", 'repeat={"closeup": 0.5}', "out=runs/x"])
    assert (cfg.learning_rate, cfg.max_steps, cfg.repeat, cfg.out) == (0.5, 3, {"closeup": 0.5}, "runs/x")
    with pytest.raises(SystemExit, match="unknown config keys: nope"):
        RLRunConfig.from_file(None, ["nope=1"])
    with pytest.raises(SystemExit, match="must be key=value"):
        VisionRunConfig.from_file(None, ["max_steps"])


def test_sft_help_lists_every_field():
    out = subprocess.run([sys.executable, "-m", "train", "sft", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    listed = {line.split(" = ")[0].strip() for line in out.stdout.splitlines() if " = " in line}
    assert listed == {f.name for f in fields(SFTRunConfig)}
