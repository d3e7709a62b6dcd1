"""Model output is untrusted input: fuzzed tool-call texts and arguments through parse_tool_call and the
real loop (Episode.advance on a real picture and a real video). No exception may escape; every invalid
call becomes an error turn whose message is at most 300 characters.

Hypothesis runs with a fixed seed (reproducible in CI) plus a random one; each example checks ten texts
(the drawn one and nine mutants): (350 + 350) x 10 through the parser and (200 + 150) x 10 through the
loop, 10,500 texts per run.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

from core import protocol as P
from core.backends.base import Generation
from core.loop import Episode, LoopConfig, Task
from core.media import Video
from core.operations import PixelLimits
from tests.conftest import numbered_frames, photo_like

LIMIT = P.MAX_MESSAGE
CONFIG = LoopConfig(max_ops=10 ** 9, max_images=10 ** 9, max_context_tokens=10 ** 9,
                    pixels=PixelLimits.preset("tiny"))
IMAGE = photo_like(160, 120)
WIDE = Image.new("RGB", (12000, 100), (200, 100, 50))
VIDEO = Video.from_frames(list(numbered_frames(6, 64, 48)))

# JSON-ish values a model might write, including the ones that broke the parser before
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20), st.sampled_from([10 ** 400, -(10 ** 309), 1e308, 0.5, 1, 2, 28, 0.999]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
names = st.one_of(st.sampled_from(P.TOOL_NAMES), st.text(max_size=30), values)
bbox = st.one_of(st.lists(st.one_of(st.floats(-2, 3000), st.integers(-5, 13000), scalars), min_size=0, max_size=6),
                 values)
arguments = st.one_of(
    st.fixed_dictionaries({"bbox_2d": bbox, "target_image": st.one_of(st.integers(-3, 6), scalars)}),
    st.fixed_dictionaries({"target_frames": st.one_of(st.lists(st.one_of(st.integers(-2, 20), scalars),
                                                               max_size=12), values)}),
    st.dictionaries(st.text(max_size=12), values, max_size=4), values)
NASTY = ["[" * 50_000, "{\"a\":" * 20_000, "9" * 5000, "1e999", "\ud800", "\udcff", "\x00", "\"" * 1000]
snippets = st.one_of(st.text(max_size=200), st.sampled_from(NASTY),
                     st.text(alphabet=st.sampled_from('{}[]":,0123456789.e-\\u'), max_size=300))


@st.composite
def call_texts(draw) -> str:
    """A turn ending with a tool call: well formed with fuzzed parts, or broken JSON."""
    prefix = draw(st.text(max_size=40))
    if draw(st.booleans()):
        obj = {"name": draw(names), "arguments": draw(arguments)}
        if draw(st.booleans()):
            obj["arguments"] = json.dumps(obj["arguments"], default=str)  # double-encoded
        try:
            body = json.dumps(obj, default=str, allow_nan=True)
        except (ValueError, TypeError, RecursionError):
            body = str(obj)
        if draw(st.integers(0, 9)) == 0:  # cut it somewhere
            body = body[: draw(st.integers(0, len(body)))]
    else:
        body = draw(snippets)
    return f"{prefix}\n{P.TOOL_CALL_START}\n{body}\n{P.TOOL_CALL_END}"


def check_parse(text: str) -> None:
    try:
        P.parse_tool_call(text)
    except P.ToolCallError as e:
        assert len(str(e)) <= LIMIT, str(e)[:400]


def check_turn(text: str, task: Task) -> None:
    """Two turns: the fuzzed call, then an answer; the episode must take both without raising."""
    ep = Episode(task, CONFIG)
    step = ep.advance(Generation(text=text, tokens_in=10, tokens_out=10))
    if step.error is not None:
        assert len(step.error) <= LIMIT, step.error[:400]
        assert step.observation.startswith("\nExecution error:") and not ep.last_images
    assert len(ep.messages) == (3 if ep.done else 4)
    if not ep.done:
        ep.advance(Generation(text="\\boxed{1}"))
        assert ep.done and ep.trajectory.answer == "1"


def mutants(text: str, rnd, n: int = 10) -> list[str]:
    """`n` cheap variations of one drawn text (cut, spliced with a nasty fragment, numbers blown up,
    braces dropped), so each Hypothesis example checks n texts: 10,500 per run in seconds."""
    out = [text]
    for _ in range(n - 1):
        t = out[rnd.randrange(len(out))]
        op = rnd.randrange(5)
        k = rnd.randrange(len(t) + 1)
        if op == 0:
            t = t[:k] + t[k + rnd.randrange(1, 8):]
        elif op == 1:
            t = t[:k] + rnd.choice(NASTY + ["-1", "0.0", "1e308", "true", "null", "[]", "{}", ","]) + t[k:]
        elif op == 2:
            t = t.replace("1", "9" * rnd.choice([3, 400, 4400]), 1)
        elif op == 3:
            t = t.replace(rnd.choice("{}[]\",:"), "", 1)
        else:
            t = t + "\n" + P.TOOL_CALL_START + t[k:]
        if not t.rstrip().endswith(P.TOOL_CALL_END):
            t += P.TOOL_CALL_END
        out.append(t)
    return out


TASKS = {"image": Task(question="q", image=IMAGE), "wide": Task(question="q", image=Image.new("RGB", (6000, 50))),
         "video": Task(question="q", video=VIDEO)}


def fuzz(n: int, fixed: bool):
    config = settings(max_examples=n, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    return (lambda f: seed(20250115)(config(f))) if fixed else config


@fuzz(350, fixed=True)
@given(call_texts(), st.randoms(use_true_random=False))
def test_parse_tool_call_raises_only_short_tool_call_errors_fixed_seed(text, rnd):
    for t in mutants(text, rnd):
        check_parse(t)


@fuzz(350, fixed=False)
@given(call_texts(), st.randoms(use_true_random=False))
def test_parse_tool_call_raises_only_short_tool_call_errors_random_seed(text, rnd):
    for t in mutants(text, rnd):
        check_parse(t)


@fuzz(200, fixed=True)
@given(call_texts(), st.randoms(use_true_random=False), st.sampled_from(sorted(TASKS)))
def test_episode_turns_every_call_into_a_step_fixed_seed(text, rnd, kind):
    for t in mutants(text, rnd):
        check_turn(t, TASKS[kind])


@fuzz(150, fixed=False)
@given(call_texts(), st.randoms(use_true_random=False), st.sampled_from(sorted(TASKS)))
def test_episode_turns_every_call_into_a_step_random_seed(text, rnd, kind):
    for t in mutants(text, rnd):
        check_turn(t, TASKS[kind])


@pytest.mark.parametrize("text,expect", [
    ("[" * 50_000, "nested too deeply"),
    ('{"name": "crop_image", "arguments": {"bbox_2d": [' + "9" * 5000 + ', 0, 1, 1], "target_image": 1}}',
     "4300"),
    ('{"name": "crop_image", "arguments": {"bbox_2d": [' + "9" * 400 + ', 0, 1, 1], "target_image": 1}}',
     "finite number"),
    ('{"name": "' + "x" * 10_000_000 + '", "arguments": {}}', "Unknown tool"),
    ('{"name": "crop_image", "arguments": {"bbox_2d": [0.1, 0.1, 0.5, 0.5], "target_image": "\ud800"}}',
     "must be a number"),
], ids=["deep-nesting", "4300-digit-int", "int-over-1e308", "10MB-tool-name", "lone-surrogate"])
def test_the_reported_crashes_are_error_turns(text, expect):
    ep = Episode(TASKS["image"], CONFIG)
    step = ep.advance(Generation(text=f"{P.TOOL_CALL_START}\n{text}\n{P.TOOL_CALL_END}"))
    assert expect in step.error and len(step.error) <= LIMIT and not ep.done


def test_a_legal_crop_of_a_wide_image_is_an_error_turn_not_a_crash():
    """A 12000x100 image: the crop is valid, but the model cannot be shown a 1:120+ strip once padded."""
    ep = Episode(Task(question="q", image=WIDE), CONFIG)
    call = P.format_tool_call("crop_image_normalized", {"bbox_2d": [0.0, 0.35, 0.99, 0.45], "target_image": 1})
    step = ep.advance(Generation(text=call))
    assert step.error and "aspect ratio" in step.error and len(step.error) <= LIMIT
    assert step.box_px is None and len(ep.raw) == 1  # nothing half-added
    ok = P.format_tool_call("crop_image_normalized", {"bbox_2d": [0.0, 0.0, 0.05, 0.99], "target_image": 1})
    assert ep.advance(Generation(text=ok)).error is None and len(ep.raw) == 2


def test_lone_surrogates_in_model_text_are_replaced():
    ep = Episode(TASKS["image"], CONFIG)
    step = ep.advance(Generation(text="odd \ud800 text \udcff \\boxed{a\ud83d}"))
    step.text.encode("utf-8")
    assert ep.done and ep.trajectory.answer.startswith("a")
