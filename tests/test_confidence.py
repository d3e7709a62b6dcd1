"""How sure the model was: the pure arithmetic with hand-worked numbers, then real forward passes of
the embedded model through both transformers paths, the session log, the replay backend (none) and
`python -m core ask --json`."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.backends import GenerationParams, load_backend
from core.backends.replay import ReplayBackend
from core.confidence import answer_confidence, step_uncertainty, token_starts
from core.loop import LoopConfig, Task, run_batch, run_to_end
from core.media import load_image
from core.operations import PixelLimits
from core.recorder import Recorder
from core.sessionlog import SessionLog

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "examples" / "zoom_needed_101.png"
TINY = LoopConfig(pixels=PixelLimits.preset("tiny"))


def test_token_starts_follow_the_text_and_skip_what_it_lost():
    assert token_starts(["The", " tag", " reads", "</tool_call>"], "The tag reads") == [0, 3, 7, None]


def test_step_uncertainty_is_the_mean_and_the_tokens_under_one_half():
    text = "reads 7. \\boxed{7}"
    pieces = ["reads", " 7", ".", " \\boxed{", "7", "}"]
    logprobs = [math.log(0.9), math.log(0.25), math.log(1.0), math.log(0.8), math.log(0.4), math.log(1.0)]
    mean, unsure = step_uncertainty(pieces, logprobs, text)
    assert mean == pytest.approx(sum(logprobs) / 6)
    assert [(u.at, u.text, u.p) for u in unsure] == [(5, " 7", 0.25), (16, "7", 0.4)]


def test_answer_confidence_is_where_the_model_decided_not_where_it_copied():
    text = "It says 12. \\boxed{12}"
    pieces = ["It", " says", " 12", ".", " \\boxed{", "1", "2", "}"]
    logprobs = [0.0, 0.0, math.log(0.3), 0.0, 0.0, math.log(0.9), math.log(0.99), 0.0]
    assert answer_confidence(pieces, logprobs, text, "12") == pytest.approx(0.3)  # " 12", not the boxed copy
    assert answer_confidence(pieces[4:], logprobs[4:], text[11:], "12") == pytest.approx(0.891)
    assert answer_confidence(pieces, logprobs, text, None) is None
    assert answer_confidence([], [], text, "12") is None


def test_an_answer_inside_another_word_or_number_is_not_the_answer():
    text = "Frame 13 shows it: 3"
    pieces = ["Frame", " 13", " shows", " it", ":", " 3"]
    logprobs = [0.0, math.log(0.1), 0.0, 0.0, 0.0, math.log(0.8)]
    assert answer_confidence(pieces, logprobs, text, "3") == pytest.approx(0.8)


@pytest.fixture(scope="module")
def backend():
    return load_backend("transformers")


def test_the_embedded_model_answers_with_a_confidence_and_per_step_uncertainty(backend):
    task = Task(question="What is written on the blue tag?", image=load_image(EXAMPLE))
    traj = run_to_end(backend, task, config=TINY, params=GenerationParams(max_new_tokens=128))
    assert traj.answer is not None and 0.0 < traj.answer_confidence <= 1.0
    for step in traj.steps:
        assert step.mean_logprob is not None and step.mean_logprob <= 0.0
        for u in step.unsure:
            assert u["p"] < 0.5 and step.text[u["at"]:u["at"] + len(u["text"])] == u["text"]
    # the batched path (the turn engine) gives the same numbers as streaming
    batched = run_batch(backend, [task], TINY, GenerationParams(max_new_tokens=128))[0]
    assert batched.answer_confidence == pytest.approx(traj.answer_confidence, abs=1e-3)
    assert [s.unsure for s in batched.steps] == [s.unsure for s in traj.steps]


def test_confidence_is_stored_with_the_session_and_read_back(backend, tmp_path):
    task = Task(question="What is written on the blue tag?", image=load_image(EXAMPLE))
    traj = run_to_end(backend, task, config=TINY, params=GenerationParams(max_new_tokens=128))
    log = SessionLog(tmp_path / "s.db")
    Recorder(log).write(traj)
    back = log.get_trajectory(traj.id)
    assert back.answer_confidence == traj.answer_confidence and back.familiar == traj.familiar
    assert [(s.mean_logprob, s.unsure) for s in back.steps] == [(s.mean_logprob, s.unsure) for s in traj.steps]
    assert log.db.execute("SELECT answer_confidence FROM sessions").fetchone()[0] == traj.answer_confidence


def test_replay_gives_no_probabilities():
    task = Task(question="q", image=load_image(EXAMPLE))
    traj = run_to_end(ReplayBackend(["The tag reads 7. \\boxed{7}"]), task, config=TINY)
    assert traj.answer == "7" and traj.answer_confidence is None and traj.familiar is None
    assert traj.steps[0].mean_logprob is None and traj.steps[0].unsure is None


def test_ask_json_prints_confidence_and_familiarity_as_top_level_keys():
    out = subprocess.run([sys.executable, "-m", "core", "ask", "--image", str(EXAMPLE), "--question",
                          "What is written on the blue tag?", "--max-new-tokens", "128", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert 0.0 < data["answer_confidence"] <= 1.0
    assert data["familiar"] is True  # a picture of the kind the embedded model learned from
