"""The transformers backend on the tiny random Qwen2.5-VL, on CPU: loop end to end, batching,
stop strings, cancel, log-probabilities, loading errors and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from core import protocol as P
from core.backends import BackendError, GenerationParams, load_backend
from core.backends.hf import StopCriteria, TransformersBackend
from core.loop import Done, LoopConfig, StepDone, Task, run, run_batch, run_to_end
from core.media import Video
from core.operations import PixelLimits
from core.trajectory import Trajectory
from tests.conftest import photo_like

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def backend(tiny_checkpoint):
    return TransformersBackend(str(tiny_checkpoint), device="cpu")


def question(text: str = "What is written on the sign?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": photo_like(112, 84, seed=1)},
                                         {"type": "text", "text": text}]}]


def assert_round_trips(traj: Trajectory) -> None:
    again = Trajectory.from_json(traj.to_json())
    assert again.to_dict() == traj.to_dict()


def test_reads_the_pixel_preset(backend):
    assert backend.pixel_preset == "tiny"
    assert backend.device == "cpu" and backend.dtype == torch.float32


def test_loop_end_to_end_with_an_image(backend):
    config = LoopConfig(pixels=PixelLimits.preset(backend.pixel_preset))
    events = list(run(backend, Task(question="What is on the sign?", image=photo_like()), config,
                      GenerationParams(max_new_tokens=12)))
    traj = events[-1].trajectory
    assert isinstance(events[-1], Done) and traj.status in {"done", "max_tokens"}
    assert any(isinstance(e, StepDone) for e in events)
    step = traj.steps[0]
    # 252x168 overview at the tiny preset: 216 vision tokens plus the prompt text
    assert step.tokens_in > 216 and 0 < step.tokens_out <= 12 and step.gen_seconds > 0
    assert traj.backend == "transformers" and traj.model == backend.model_id
    assert_round_trips(traj)


def test_loop_end_to_end_with_a_video_file(backend, video_path):
    config = LoopConfig(pixels=PixelLimits.preset("tiny"))
    video = Video.from_file(video_path, n=8)
    traj = run_to_end(backend, Task(question="Which number appears first?", video=video),
                      config=config, params=GenerationParams(max_new_tokens=8))
    assert traj.status in {"done", "max_tokens"} and traj.media.kind == "video"
    assert traj.steps[0].tokens_in > 8 and traj.steps[0].tokens_out > 0
    assert_round_trips(traj)


def test_run_batch_goes_through_generate_batch(backend, video_path):
    tasks = [Task(question="What is on the sign?", image=photo_like(400, 300)),
             Task(question="Count the frames.", video=Video.from_file(video_path, n=4))]
    trajs = run_batch(backend, tasks, LoopConfig(pixels=PixelLimits.preset("tiny")), GenerationParams(max_new_tokens=6))
    assert [t.status in {"done", "max_tokens"} for t in trajs] == [True, True]
    assert all(t.steps[0].tokens_out > 0 for t in trajs)


def test_greedy_batch_equals_single_conversations(backend):
    convs = [question("What is written on the sign?"),
             question("Which colour is the sky in this picture, and how many boxes are there?")]
    params = GenerationParams(max_new_tokens=10)
    batched = backend.generate_batch(convs, params)
    singles = [backend.generate(c, params) for c in convs]
    assert [g.token_ids for g in batched] == [g.token_ids for g in singles]
    assert [g.text for g in batched] == [g.text for g in singles]
    assert [g.tokens_in for g in batched] == [g.tokens_in for g in singles]
    assert batched[0].tokens_in < batched[1].tokens_in  # the left padding is not counted


def test_stop_criteria_stop_right_after_tool_call_end(backend):
    tok = backend.tokenizer
    call = "I will zoom.\n" + P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1})
    ids = tok(call + " and more text", add_special_tokens=False)["input_ids"]
    end = tok(call, add_special_tokens=False)["input_ids"]
    prompt = [1, 2, 3]
    criteria = StopCriteria(tok, P.STOP_STRINGS, backend.stop_ids, len(prompt), 1)
    stopped_at = None
    for n in range(1, len(ids) + 1):
        if criteria(torch.tensor([prompt + ids[:n]]))[0]:
            stopped_at = n
            break
    assert stopped_at == len(end) and criteria.lengths == [len(end)]
    assert tok.decode(ids[:stopped_at]).endswith("</tool_call>")


def test_stop_criteria_stop_on_end_tokens_per_row(backend):
    tok = backend.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    words = tok("hello there", add_special_tokens=False)["input_ids"]
    criteria = StopCriteria(tok, P.STOP_STRINGS, backend.stop_ids, 0, 2)
    done = criteria(torch.tensor([words + [im_end], words + words[:1]]))
    assert done.tolist() == [True, False] and criteria.lengths == [len(words) + 1, None]


class CountingTokenizer:
    """The real tokenizer, counting how many decodes look at more than one token."""

    def __init__(self, tok):
        self.tok, self.window_decodes = tok, 0

    def decode(self, ids, **kw):
        self.window_decodes += len(ids) > 1
        return self.tok.decode(ids, **kw)


def test_stop_criteria_decodes_the_tail_only_after_a_closing_token(backend):
    """The first stop found with the skip equals a decode of the tail after every token, for
    protocol stops, a stop that is a word, and characters split over several byte tokens."""
    tok = backend.tokenizer
    texts = ["I will zoom.\n" + P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1})
             + " trailing", "naïve café → résumé 中文 text then </tool_call> and more", "no stop here at all, > only"]
    stop_sets = [P.STOP_STRINGS, ("café",) + P.STOP_STRINGS, ("中文",), ("e →",)]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for stops in stop_sets:
            counting = CountingTokenizer(tok)
            fast = StopCriteria(counting, stops, backend.stop_ids, 0, 1)
            first_fast = next((n for n in range(1, len(ids) + 1) if fast.row_done(ids[:n])), None)
            first_full = next((n for n in range(1, len(ids) + 1)
                               if any(s in tok.decode(ids[:n][-24:], skip_special_tokens=False) for s in stops)), None)
            assert first_fast == first_full, (text, stops)
            if text == texts[0] and stops == P.STOP_STRINGS:  # plain ASCII: only '>' tokens open the tail
                assert first_fast and counting.window_decodes <= first_fast / 4


def test_stop_string_ends_one_row_of_a_real_batch(backend):
    """Take what greedy decoding writes, then stop on a piece of it: only that row stops there."""
    convs = [question("What is written on the sign?"), question("How many boxes?")]
    free = backend.generate_batch(convs, GenerationParams(max_new_tokens=12))
    assert all(g.finish_reason == "length" for g in free)
    tok = backend.tokenizer
    piece = tok.decode(free[0].token_ids[3:5])
    assert piece and piece not in free[1].text
    stopped = backend.generate_batch(convs, GenerationParams(max_new_tokens=12, stop=(piece,) + P.STOP_STRINGS))
    assert stopped[0].finish_reason == "stop" and stopped[0].tokens_out == 5
    assert not stopped[0].text.endswith(piece) and free[0].text.startswith(stopped[0].text)
    assert stopped[1].token_ids == free[1].token_ids and stopped[1].finish_reason == "length"


def test_cancel_event_stops_streaming(backend):
    cancel = threading.Event()
    chunks, result = [], None
    for chunk in backend.stream(question(), GenerationParams(max_new_tokens=400), cancel):
        if isinstance(chunk, str):
            chunks.append(chunk)
            cancel.set()
        else:
            result = chunk
    assert result.finish_reason == "cancelled"
    assert 0 < result.tokens_out < 400 and chunks


def test_abandoned_stream_frees_the_model(backend):
    stream = backend.stream(question(), GenerationParams(max_new_tokens=2000))
    assert isinstance(next(stream), str)
    stream.close()  # the reader went away: generation must stop, not run 2000 tokens holding the lock
    assert backend._lock.acquire(timeout=5)
    backend._lock.release()
    assert backend.generate(question(), GenerationParams(max_new_tokens=3)).tokens_out == 3


def test_cancel_through_the_loop_keeps_the_step(backend):
    cancel = threading.Event()
    events = []
    for event in run(backend, Task(question="What?", image=photo_like(200, 150)),
                     LoopConfig(pixels=PixelLimits.preset("tiny")), GenerationParams(max_new_tokens=400),
                     cancel=cancel):
        events.append(event)
        if type(event).__name__ == "TextDelta":
            cancel.set()
    traj = events[-1].trajectory
    assert traj.status == "cancelled" and traj.steps[0].finish_reason == "cancelled"


def test_logprobs_match_a_teacher_forced_forward_pass(backend):
    messages = question()
    gen = backend.generate(messages, GenerationParams(max_new_tokens=8, logprobs=True))
    assert len(gen.logprobs) == gen.tokens_out == 8 and all(lp <= 0 for lp in gen.logprobs)
    inputs = backend._inputs([messages])
    n = inputs["input_ids"].shape[1]
    new = torch.tensor([gen.token_ids])
    inputs["input_ids"] = torch.cat([inputs["input_ids"], new], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(new, dtype=torch.int32)], 1)
    with torch.no_grad():
        logits = backend.model(**inputs).logits[0, n - 1:-1].float()
    expected = torch.log_softmax(logits, -1).gather(1, new[0][:, None])[:, 0]
    assert torch.allclose(torch.tensor(gen.logprobs), expected, atol=1e-4)


def test_sampling_honours_the_seed(backend):
    params = GenerationParams(max_new_tokens=10, temperature=1.0, seed=7)
    a, b = backend.generate(question(), params), backend.generate(question(), params)
    c = backend.generate(question(), GenerationParams(max_new_tokens=10, temperature=1.0, seed=8))
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids


def test_loading_errors_are_clear(tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        TransformersBackend(str(tmp_path / "nowhere"))
    with pytest.raises(BackendError, match="no config.json"):
        TransformersBackend(str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(BackendError, match="cannot load model"):
        load_backend("transformers", model=str(broken))


def test_unreachable_hub_id_is_a_clear_cli_error(photo_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "core", "ask", "--model", "no-such-org/no-such-model", "--image", str(photo_path),
         "--question", "q"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert "cannot load model 'no-such-org/no-such-model'" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_ask_with_the_tiny_checkpoint(tiny_checkpoint, photo_path):
    proc = subprocess.run(
        [sys.executable, "-m", "core", "ask", "--model", str(tiny_checkpoint), "--image", str(photo_path),
         "--question", "What does the sign say?", "--max-new-tokens", "8", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert "answer" in data and len(data["steps"]) == 1
    step = data["steps"][0]
    assert step["tokens_out"] > 0 and step["tool"] is None and step["error"] is None
    assert data["config"]["pixels"]["first_max"] == PixelLimits.preset("tiny").first_max
