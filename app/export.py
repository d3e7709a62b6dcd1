"""Annotated trajectories -> SFT records (our training format) and a plain JSONL of labels.

Three layers, each testable alone:

1. `plan_corrections(traj, annotations)` (pure): the assistant turns to train on and which of them
   carry loss. Rules, in step order:
   - an unannotated step is kept as it was; a step that failed (parse or execution error) is kept
     and masked (the model sees it, the loss skips it);
   - an operation step labeled bad (wrong box, wrong frame, format error, or any label) with a
     corrected box or corrected frames is kept *masked*, and a correction turn follows it
     (the corrected text, or a short bridge, plus the corrected tool call): the release's
     self-correction traces;
   - a step with corrected text (and no corrected operation) is replaced by that text;
   - a final answer step with a corrected answer gets its last \\boxed{} replaced;
   - a step labeled bad without any correction is kept and masked; when that step is the final
     answer, or the whole trajectory is labeled bad without a corrected answer, the trajectory is
     not exported as SFT (its labels still are);
   - later crop calls are renumbered (`target_image`) for the images an inserted correction adds.
   Corrected boxes are normalized [x0, y0, x1, y1] on the *original* image (target_image 1): the
   box the annotator drew is the `bbox_2d` argument, padded by the operation as usual.
2. `reexecute(...)`: the planned turns run through the real tool loop (core.loop + ReplayBackend),
   so every observation and image in the record is what the operations really return.
3. `export_annotated(log, out_dir)`: writes `train.jsonl` (train/data.py format, `train_turns`
   per assistant turn), `labels.jsonl`, `images/`, `originals/` (full-resolution media, named by
   each record's `meta.task` as `python -m train rl` expects) and `export.json` (counts, skips).
   The folder is a dataset for `python -m train sft --config ... data=<out_dir>` (and for RL).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import protocol as P
from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import DiskImageStore, MediaError, Video, load_image
from core.operations import PixelLimits
from core.scoring import extract_answer, last_boxed
from core.sessionlog import SessionLog
from core.trajectory import Trajectory
from train.data import trajectory_to_sft_record  # the training format's own writer

logger = logging.getLogger(__name__)

LABELS = ("wrong box", "wrong frame", "hallucinated observation", "wrong answer", "format error", "other")
CORRECTION_FIELDS = ("corrected_answer", "corrected_box", "corrected_frames", "corrected_text")
BRIDGE = {
    "wrong box": "That region does not show what I need. Let me zoom in on the right region instead.",
    "wrong frame": "These frames do not show what I need. Let me look at other frames instead.",
    "format error": "Let me call the operation again with valid arguments.",
}
DEFAULT_BRIDGE = "Let me look again more carefully."
CORRECTIONS_CONFIG = "configs/sft_corrections.json"  # starts from the embedded model, writes under data/runs/


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


# ---- 1. planning (pure) ---------------------------------------------------------------------------

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


def correction_call(ann: dict) -> str | None:
    """The corrected operation as tool-call text: a crop of the original image, or selected frames."""
    box = ann.get("corrected_box")
    if box:
        x0, y0, x1, y1 = (min(max(float(v), 0.0), 0.999) for v in box)  # < 1: read as normalized
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"corrected box {box} is empty")
        return P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [round(v, 3) for v in (x0, y0, x1, y1)],
                                                "target_image": 1})
    frames = ann.get("corrected_frames")
    if frames:
        return P.format_tool_call(P.FRAMES_TOOL, {"target_frames": [int(f) for f in frames]})
    return None


def replace_answer(text: str, answer: str) -> str:
    """The turn with its last \\boxed{} holding `answer` (appended when there is none)."""
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
    return text[:brace + 1] + answer + text[end - 1:]


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
            fix = correction_call(ann) if ann else None
        except ValueError as e:
            plan.skip = f"step {step.index + 1}: {e}"
            return plan
        if ann is None:
            plan.turns.append(Turn(text, not step.error, step.index, "masked error" if step.error else "kept"))
        elif fix and is_call:
            plan.turns.append(Turn(text, False, step.index, "masked (labeled bad)"))
            label = (ann["labels"] or ["other"])[-1]
            bridge = ann.get("corrected_text") or BRIDGE.get(label, DEFAULT_BRIDGE)
            fixed = bridge if P.TOOL_CALL_START in bridge else f"{bridge.rstrip()}\n\n{fix}"
            plan.turns.append(Turn(fixed, True, None, "correction"))
            added = _images_added(fixed)
            if added:  # the inserted images come right after the original ones made so far
                n_now = n_images + len(step.images)
                first_shifted = min(first_shifted, n_now + 1)
                shift += added
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


# ---- 2. re-execution through the real operations ----------------------------------------------------

def task_for(log: SessionLog, traj: Trajectory, answer: str | None = None) -> Task:
    """The original question and media again: the stored original image, or the video file
    (its stored overview frames when the file is gone)."""
    media = traj.media
    if media.kind == "image":
        path = log.image_path(media.image.sha) if media.image else None
        if path is None and media.path and Path(media.path).exists():
            path = Path(media.path)
        if path is None:
            raise MediaError("the original image is not stored")
        return Task(question=traj.question, image=load_image(path), choices=traj.choices, answer=answer,
                    media_path=media.path, meta=dict(traj.meta))
    if media.path and Path(media.path).exists():
        video = Video.from_file(media.path, n=len(media.overview) or 16)
    else:
        paths = [log.image_path(r.sha) for r in media.overview]
        if not paths or any(p is None for p in paths):
            raise MediaError("neither the video file nor its frames are stored")
        video = Video.from_frames([load_image(p) for p in paths], fps=media.fps or 1.0)
    return Task(question=traj.question, video=video, choices=traj.choices, answer=answer, media_path=media.path,
                meta=dict(traj.meta))


def reexecute(traj: Trajectory, plan: Plan, task: Task, store) -> Trajectory:
    """Run the planned turns through core.loop with the replay backend: true observations."""
    pixels = traj.config.get("pixels")
    guideline = traj.guideline if traj.guideline != "notool" or not traj.tools_enabled else "vcot"
    config = LoopConfig(tools=traj.tools_enabled, guideline="vcot" if guideline == "notool" else guideline,
                        prompt_variant=traj.config.get("prompt_variant", "rl"),
                        max_ops=max(64, len(plan.turns)), max_images=10_000, max_context_tokens=10 ** 9,
                        pixels=PixelLimits(**pixels) if isinstance(pixels, dict) else PixelLimits())
    task.id = f"{traj.id}-sft"
    new = run_to_end(ReplayBackend([t.text for t in plan.turns]), task, config=config, store=store)
    new.guideline = guideline
    if len(new.steps) != len(plan.turns) or new.status == "error":
        raise ValueError(f"re-execution ran {len(new.steps)} of {len(plan.turns)} turns "
                         f"({new.status}: {new.error or 'a turn did not continue as planned'})")
    return new


def train_mask(plan: Plan, new: Trajectory) -> list[bool]:
    """Loss on planned turns only, and never on a turn whose operation failed when re-executed."""
    return [t.train and not s.error for t, s in zip(plan.turns, new.steps)]


# ---- 3. writing the export folder ------------------------------------------------------------------

def label_rows(log: SessionLog, session_ids: list[str]) -> list[dict]:
    """One row per annotation, with the question, model, answer and the step's text for context."""
    rows = []
    for sid in session_ids:
        s = log.session(sid)
        steps = {st["idx"]: st for st in log.steps(sid)}
        for a in log.list_annotations(sid):
            st = steps.get(a["step_idx"]) if a["step_idx"] is not None else None
            rows.append({**a, "question": s["question"], "model": s["model"], "answer": s["answer"],
                         "ground_truth": s["ground_truth"], "step_text": st["text"] if st else None,
                         "step_tool": st["tool"] if st else None,
                         "step_box_norm": json.loads(st["box_norm"]) if st and st["box_norm"] else None})
    return rows


def annotated_sessions(log: SessionLog) -> list[str]:
    return [r[0] for r in log.db.execute(
        "SELECT a.session_id FROM annotations a JOIN sessions s ON s.id = a.session_id "
        "GROUP BY a.session_id ORDER BY min(s.created_at)")]


def preview(log: SessionLog, session_ids: list[str] | None = None) -> list[dict]:
    """What an export would do, without writing: one row per session (plan, counts, skip reason)."""
    out = []
    for sid in session_ids if session_ids is not None else annotated_sessions(log):
        traj = log.get_trajectory(sid)
        plan = plan_corrections(traj, log.list_annotations(sid))
        out.append({"session_id": sid, "question": traj.question, "labels": plan.labels,
                    "turns": len(plan.turns), "trained": sum(t.train for t in plan.turns),
                    "notes": [t.note for t in plan.turns], "answer": plan.answer, "skip": plan.skip})
    return out


@dataclass
class ExportReport:
    out_dir: str
    sessions: int = 0
    records: int = 0
    corrected: int = 0
    labels: int = 0
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    exported_sessions: list[str] = field(default_factory=list)  # sessions written as SFT records
    held_out: int = 0  # of the records, how many went to test.jsonl (not trained on)

    def markdown(self) -> str:
        held = f" ({self.held_out} held out in test.jsonl)" if self.held_out else ""
        lines = [f"Exported **{self.records}** SFT records{held} ({self.corrected} with corrections) and "
                 f"**{self.labels}** labels from {self.sessions} annotated sessions to `{self.out_dir}` "
                 f"in {self.seconds:.1f} s.",
                 f"\nFine-tune on it (Train tab, or): `python -m train sft --config {CORRECTIONS_CONFIG} "
                 f"data={self.out_dir} --out data/runs/corrections`"]
        if self.skipped:
            lines.append("\nNot exported as SFT (labels kept):\n" + "\n".join(
                f"- `{s['session_id'][:12]}`: {s['reason']}" for s in self.skipped))
        return "\n".join(lines)


HOLD_OUT_EVERY = 5  # every 5th exported record goes to test.jsonl: the export's own held-out items


def export_annotated(log: SessionLog, out_dir: str | Path, session_ids: list[str] | None = None,
                     hold_out_every: int = HOLD_OUT_EVERY) -> ExportReport:
    """Write the SFT dataset (train.jsonl + images/; every `hold_out_every`-th record in test.jsonl
    instead, to evaluate a fine-tune on) and labels.jsonl for the annotated sessions."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = DiskImageStore(out / "images")
    ids = session_ids if session_ids is not None else annotated_sessions(log)
    report = ExportReport(out_dir=str(out), sessions=len(ids))
    records = []
    for sid in ids:
        traj = log.get_trajectory(sid)
        plan = plan_corrections(traj, log.list_annotations(sid))
        if plan.skip:
            report.skipped.append({"session_id": sid, "reason": plan.skip})
            continue
        try:
            new = reexecute(traj, plan, task_for(log, traj, plan.answer), store)
        except (MediaError, ValueError, OSError) as e:
            report.skipped.append({"session_id": sid, "reason": f"re-execution failed: {e}"})
            continue
        mask = train_mask(plan, new)
        if not any(mask):
            report.skipped.append({"session_id": sid, "reason": "every trained turn failed when re-executed"})
            continue
        rec = trajectory_to_sft_record(new, store, mask, relative_to=out)
        rec["meta"].update({"source_session": sid, "labels": plan.labels, "corrected": plan.corrected,
                            "turn_notes": [t.note for t in plan.turns], "model": traj.model,
                            "original_answer": traj.answer})
        original = _copy_original(log, traj, out)
        if original:  # what `python -m train rl` reads to re-ask the question on the full-resolution media
            rec["meta"]["task"] = {"question": traj.question, "answer": plan.answer, "choices": traj.choices,
                                   "category": traj.meta.get("category") or "annotated", "media": original,
                                   "kind": "image" if traj.media.kind == "image" else "video"}
        records.append(rec)
        report.exported_sessions.append(sid)
        report.corrected += int(plan.corrected)
    labels = label_rows(log, ids)
    held = [r for i, r in enumerate(records, 1)
            if hold_out_every and i % hold_out_every == 0 and "task" in r["meta"]]  # eval needs meta.task
    report.held_out = len(held)
    records = [r for r in records if not any(r is h for h in held)]
    if held:
        _write_jsonl(out / "test.jsonl", held)
    _write_jsonl(out / "train.jsonl", records)
    _write_jsonl(out / "labels.jsonl", labels)
    report.records, report.labels = len(records) + len(held), len(labels)
    report.seconds = time.perf_counter() - t0
    (out / "export.json").write_text(json.dumps({**asdict(report), "db": str(log.path),
                                                 "created_at": time.time()}, indent=2))
    return report


def _copy_original(log: SessionLog, traj: Trajectory, out: Path) -> str | None:
    """The original image (or video file) under <out>/originals/, as a path relative to <out>."""
    media = traj.media
    if media.kind == "image" and media.image is not None:
        src = log.image_path(media.image.sha)
        name = f"originals/{media.image.sha}.png"
    elif media.kind == "video" and media.path and Path(media.path).exists():
        src = Path(media.path)
        name = f"originals/{traj.id}{src.suffix}"
    else:
        return None
    if src is None:
        return None
    dest = out / name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return name


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
