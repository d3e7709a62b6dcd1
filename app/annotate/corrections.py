"""How annotations become training turns: `plan_corrections(traj, annotations)`, pure, decides the
assistant turns an exported SFT record trains on and which of them carry loss (app/annotate/export.py then
re-executes them through the real operations and writes the dataset).

Rules, in step order:
- an unannotated step is kept as it was; a step that failed (parse or execution error) is kept
  and masked (the model sees it, the loss skips it);
- an operation step labeled bad (wrong box, wrong frame, format error, or any label) with a
  corrected box or corrected frames becomes the step as it should have been: its own words (or the
  corrected text) with the corrected tool call, trained; the steps after it, which answered the
  wrong view, are dropped, and the final answer turn follows the corrected call's real observation
  (a long bridge such as "That region does not show what I need…" after a masked wrong call was
  text the embedded model had never written: 50 such records broke its calls);
- a step with corrected text (and no corrected operation) is replaced by that text;
- a final answer step with a corrected answer gets its last \\boxed{} replaced;
- a step labeled bad without any correction is kept and masked; when that step is the final
  answer, or the whole trajectory is labeled bad without a corrected answer, the trajectory is
  not exported as SFT (its labels still are);
- later crop calls are renumbered (`target_image`) for the images an inserted correction adds.
Corrected boxes are normalized [x0, y0, x1, y1] on the *original* image (target_image 1): the
box the annotator drew is the `bbox_2d` argument, padded by the operation as usual.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from core import protocol as P
from core.scoring import extract_answer, last_boxed
from core.trajectory import Trajectory

LABELS = ("wrong box", "wrong frame", "hallucinated observation", "wrong answer", "format error", "other")


CORRECTION_FIELDS = ("corrected_answer", "corrected_box", "corrected_frames", "corrected_text")



@dataclass
class Turn:
    text: str
    train: bool
    source_step: int | None  # the original step it comes from; None for an inserted correction
    note: str = ""  # kept | masked error | masked (labeled bad) | correction | corrected text | corrected answer


@dataclass
class Plan:
    session_id: str
    turns: list[Turn] = field(default_factory=list)
    answer: str | None = None  # the expected final answer: corrected, else the ground truth
    labels: list[str] = field(default_factory=list)
    skip: str | None = None  # why this trajectory is not exported as SFT (None: exported)

    @property
    def corrected(self) -> bool:
        return any(t.note in ("correction", "corrected text", "corrected answer") for t in self.turns)


def merge_annotations(annotations: list[dict]) -> dict[int | None, dict]:
    """Per step (None = whole trajectory): the labels in order, and the latest value of each field."""
    out: dict[int | None, dict] = {}
    for a in sorted(annotations, key=lambda a: (a.get("created_at") or 0, a.get("id") or 0)):
        m = out.setdefault(a.get("step_idx"), {"labels": [], "comments": []})
        if a.get("label"):
            m["labels"].append(a["label"])
        if a.get("comment"):
            m["comments"].append(a["comment"])
        for k in CORRECTION_FIELDS:
            if a.get(k) not in (None, "", []):
                m[k] = a[k]
    return out


def _images_added(text: str) -> int:
    """Images a turn's tool call adds when it succeeds (crop: 1, select_frames: one per frame)."""
    if not P.has_tool_call(text):
        return 0
    try:
        call = P.parse_tool_call(text)
    except P.ToolCallError:
        return 0
    if call.name == P.FRAMES_TOOL:
        frames = call.arguments.get("target_frames")
        return len(frames) if isinstance(frames, list) else 1
    return 1


def _renumber(text: str, first_shifted: int, shift: int) -> str:
    """Shift a crop call's target_image by `shift` when it points at image >= first_shifted."""
    if not shift or not P.has_tool_call(text):
        return text
    try:
        call = P.parse_tool_call(text)
    except P.ToolCallError:
        return text
    target = call.arguments.get("target_image")
    if call.name == P.FRAMES_TOOL or not isinstance(target, (int, float)) or target < first_shifted:
        return text
    head = text[:text.rfind(P.TOOL_CALL_START)]
    return head + P.format_tool_call(call.name, {**call.arguments, "target_image": int(target) + shift})


def box_decimals(arguments: dict | None) -> int:
    """How many decimals the model writes its box numbers with (2 or 3; 3 when it wrote no box)."""
    box = (arguments or {}).get("bbox_2d")
    if not isinstance(box, list) or not box:
        return 3
    places = [len(repr(float(v)).split(".")[1].rstrip("0")) for v in box if isinstance(v, (int, float))]
    return min(max(max(places, default=3), 2), 3)


def outward(box: list[float], decimals: int) -> list[float]:
    """The box rounded to `decimals` without cutting into it (x0, y0 down; x1, y1 up), inside [0, 1)."""
    scale, top = 10 ** decimals, 1 - 10 ** -decimals  # < 1: read as normalized
    x0, y0 = (math.floor(round(float(v) * scale, 6)) / scale for v in box[:2])
    x1, y1 = (math.ceil(round(float(v) * scale, 6)) / scale for v in box[2:])
    return [round(min(max(v, 0.0), top), decimals) for v in (x0, y0, x1, y1)]


def correction_call(ann: dict, decimals: int = 3) -> str | None:
    """The corrected operation as tool-call text: a crop of the original image, its box written with
    the model's own number of decimals (a box in a format the model never wrote teaches it a new
    format), or selected frames."""
    box = ann.get("corrected_box")
    if box:
        x0, y0, x1, y1 = outward(box, decimals)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"corrected box {box} is empty")
        return P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [x0, y0, x1, y1], "target_image": 1})
    frames = ann.get("corrected_frames")
    if frames:
        return P.format_tool_call(P.FRAMES_TOOL, {"target_frames": [int(f) for f in frames]})
    return None


def replace_answer(text: str, answer: str) -> str:
    """The turn with its last \\boxed{} holding `answer` (appended when there is none), and the
    paragraph that leads to it reading `answer` too ("The tag reads 7." -> "The tag reads 3."), so the
    trained turn never states one answer and boxes another."""
    old = last_boxed(text)
    if old is None:
        return (text.rstrip() + f"\n\nThe answer is \\boxed{{{answer}}}.").lstrip()
    start = text.rfind("\\boxed")
    brace = text.index("{", start)
    end = brace + 1
    depth = 1
    while depth and end < len(text):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        end += 1
    head = text[:start]
    para = head.rfind("\n\n", 0, len(head.rstrip())) + 1  # 0 when the turn is one paragraph
    if old.strip() and old != answer:
        said = re.compile(rf"(?<!\w){re.escape(old)}(?!\w)")
        head = head[:para] + said.sub(lambda _: answer, head[para:])
    return head + text[start:brace + 1] + answer + text[end - 1:]


def plan_corrections(traj: Trajectory, annotations: list[dict]) -> Plan:
    """Which turns to train on, with corrections applied (see the module docstring for the rules)."""
    plan = Plan(session_id=traj.id, answer=traj.ground_truth)
    merged = merge_annotations(annotations)
    plan.labels = [lab for m in merged.values() for lab in m["labels"]]
    if not merged:
        plan.skip = "not annotated"
        return plan
    whole = merged.get(None, {})
    step_answers = [m["corrected_answer"] for k, m in merged.items() if k is not None and m.get("corrected_answer")]
    answer = whole.get("corrected_answer") or (step_answers[-1] if step_answers else None)
    final_text = (merged.get(len(traj.steps) - 1) or {}).get("corrected_text")
    if not answer and final_text and not P.has_tool_call(final_text):
        answer = last_boxed(final_text)  # a corrected final turn carries its own answer
    if answer:
        plan.answer = answer
    first_shifted, shift = 10 ** 9, 0  # original images numbered >= first_shifted move by shift
    n_images = 1 if traj.media.kind == "image" else 0  # images the original had before the current step
    last = len(traj.steps) - 1
    for step in traj.steps:
        ann = merged.get(step.index)
        text = _renumber(step.text, first_shifted, shift)
        is_call = step.tool is not None or step.error is not None or P.has_tool_call(step.text)
        try:
            fix = correction_call(ann, box_decimals(step.arguments)) if ann else None
        except ValueError as e:
            plan.skip = f"step {step.index + 1}: {e}"
            return plan
        if ann is None:
            plan.turns.append(Turn(text, not step.error, step.index, "masked error" if step.error else "kept"))
        elif fix and is_call:  # the step as it should have been; what followed answered the wrong view
            own = text[:text.find(P.TOOL_CALL_START)] if P.TOOL_CALL_START in text else text
            words = ann.get("corrected_text") or own
            fixed = words if P.TOOL_CALL_START in words else f"{words.rstrip()}\n\n{fix}".lstrip()
            plan.turns.append(Turn(fixed, True, step.index, "correction"))
            reply = final_text or traj.steps[last].text
            said = answer or (traj.ground_truth if traj.correct else None)
            if step.index != last and said and not P.has_tool_call(reply):
                plan.turns.append(Turn(replace_answer(reply, said), True, last, "corrected answer" if answer else "kept"))
            break
        elif ann.get("corrected_text") or (fix and not is_call):
            new = ann.get("corrected_text") or fix
            if fix and P.TOOL_CALL_START not in new:
                new = f"{new.rstrip()}\n\n{fix}"
            if step.index == last and answer and not P.has_tool_call(new):
                new = replace_answer(new, answer)
            delta = _images_added(new) - len(step.images)
            if delta:
                first_shifted = min(first_shifted, n_images + len(step.images) + 1)
                shift += delta
            plan.turns.append(Turn(new, True, step.index, "corrected text"))
        elif step.index == last and answer and not is_call:
            plan.turns.append(Turn(replace_answer(text, answer), True, step.index, "corrected answer"))
        else:
            plan.turns.append(Turn(text, False, step.index, "masked (labeled bad)"))
            if step.index == last and not is_call:
                plan.skip = "the final answer is labeled bad and has no correction"
        n_images += len(step.images)
    if not plan.turns:
        plan.skip = "no steps"
        return plan
    final = plan.turns[-1]
    if P.has_tool_call(final.text):  # ended on an operation (cap reached, or corrected into one)
        if not answer:
            plan.skip = plan.skip or "ends on an operation and has no corrected answer"
            return plan
        plan.turns.append(Turn(f"\\boxed{{{answer}}}", True, None, "corrected answer"))
    elif answer and final.note in ("kept", "masked error") and extract_answer(final.text) != answer:
        plan.turns[-1] = Turn(replace_answer(final.text, answer), True, final.source_step, "corrected answer")
    if whole.get("labels") and not answer and not plan.corrected and plan.skip is None:
        plan.skip = "the trajectory is labeled bad and has no correction"
    if traj.correct is False and not answer and plan.skip is None:
        plan.skip = "the answer is wrong and no corrected answer was given"
    if not any(t.train for t in plan.turns) and plan.skip is None:
        plan.skip = "no turn left to train on"
    return plan
