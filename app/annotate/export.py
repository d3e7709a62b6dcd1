"""Annotated trajectories -> SFT records (our training format) and a plain JSONL of labels.

Three layers, each testable alone:

1. `app/annotate/corrections.py: plan_corrections(traj, annotations)` (pure): the assistant turns to train on
   and which of them carry loss.
2. `reexecute(...)`: the planned turns run through the real tool loop (core.loop + ReplayBackend),
   so every observation and image in the record is what the operations really return.
3. `export_annotated(log, out_dir)`: writes `train.jsonl` (core/records.py format, `train_turns`
   per assistant turn), `labels.jsonl`, `images/`, `originals/` (full-resolution media, named by
   each record's `meta.task` as `python -m train rl` expects) and `export.json` (counts, skips).
   The folder is a dataset for `python -m train sft --config ... data=<out_dir>` (and for RL).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from app.annotate.corrections import Plan, plan_corrections
from app.shared.studio_log import StudioLog
from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import DiskImageStore, MediaError, Video, load_image
from core.operations import PixelLimits
from core.paths import PathError, safe_part, under
from core.trajectory import Trajectory
from core.records import TaskRecord, trajectory_to_sft_record, write_dataset_card

logger = logging.getLogger(__name__)

CORRECTIONS_CONFIG = "configs/sft_corrections.json"  # starts from the embedded model, writes under data/runs/

# ---- 2. re-execution through the real operations ----------------------------------------------------

def task_for(log: StudioLog, traj: Trajectory, answer: str | None = None) -> Task:
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

def label_rows(log: StudioLog, session_ids: list[str]) -> list[dict]:
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


def annotated_sessions(log: StudioLog) -> list[str]:
    return [r[0] for r in log.db.execute(
        "SELECT a.session_id FROM annotations a JOIN sessions s ON s.id = a.session_id "
        "GROUP BY a.session_id ORDER BY min(s.created_at)")]


def preview(log: StudioLog, session_ids: list[str] | None = None) -> list[dict]:
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


def export_annotated(log: StudioLog, out_dir: str | Path, session_ids: list[str] | None = None,
                     hold_out_every: int = HOLD_OUT_EVERY, progress: bool = True) -> ExportReport:
    """Write the SFT dataset (train.jsonl + images/; every `hold_out_every`-th record in test.jsonl
    instead, to evaluate a fine-tune on), labels.jsonl and a dataset card (README.md, so
    `datasets.load_dataset(out_dir)` reads it) for the annotated sessions."""
    t0 = time.perf_counter()
    final = Path(out_dir)
    out = partial_dir(final)  # written aside and renamed at the end: a killed export leaves no half folder
    store = DiskImageStore(out / "images")
    ids = session_ids if session_ids is not None else annotated_sessions(log)
    report = ExportReport(out_dir=str(final), sessions=len(ids))
    records = []
    for sid in tqdm(ids, desc="export", unit="session", disable=not progress or not ids):
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
        if traj.meta.get("item_id") is not None:  # an evaluation's item: the gain view finds items like it
            rec["meta"]["source_item"] = {"id": str(traj.meta["item_id"]), "media": traj.media.path}
        try:
            original = _copy_original(log, traj, out)
        except (OSError, PathError) as e:
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise
            logger.warning("session %s: original not copied: %s", sid, e)
            original = None
        if original:  # what `python -m train rl` reads to re-ask the question on the full-resolution media
            rec["meta"]["task"] = TaskRecord(traj.question, plan.answer, traj.meta.get("category") or "annotated",
                                             original, kind="image" if traj.media.kind == "image" else "video",
                                             choices=traj.choices).to_dict()
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
    splits = {"train": "train.jsonl", **({"test": "test.jsonl"} if held else {})}
    write_dataset_card(out, splits, "Annotated Pixel Reasoner sessions",
                       f"{report.records} corrected trajectories exported from the Studio's session log (`train.jsonl`, "
                       "for `python -m train sft`; `test.jsonl`, held out to evaluate the fine-tune) and their "
                       "labels (`labels.jsonl`, the config `labels`).", {"labels": "labels.jsonl"})
    report.seconds = time.perf_counter() - t0
    (out / "export.json").write_text(json.dumps({**asdict(report), "db": str(log.path),
                                                 "created_at": time.time()}, indent=2))
    publish(out, final)
    return report


PARTIAL = ".{name}.partial-{pid}"


def partial_dir(final: Path) -> Path:
    """A fresh hidden folder beside `final` to write the export into; partial folders left by dead
    processes (a kill -9 mid-export) are removed first. An existing non-empty `final` is written in
    place (callers refuse it; the app does)."""
    from core.sessionlog import pid_alive

    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and any(final.iterdir()):
        return final
    for old in final.parent.glob(PARTIAL.format(name=final.name, pid="*")):
        pid = old.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and pid_alive(int(pid))) or int(pid) == os.getpid():
            shutil.rmtree(old, ignore_errors=True)
    tmp = final.parent / PARTIAL.format(name=final.name, pid=os.getpid())
    tmp.mkdir()
    return tmp


def publish(out: Path, final: Path) -> None:
    """Move the finished export to its name (an empty folder there is replaced)."""
    if out == final:
        return
    if final.exists():
        final.rmdir()
    os.replace(out, final)


def _copy_original(log: StudioLog, traj: Trajectory, out: Path) -> str | None:
    """The original image (or video file) under <out>/originals/, as a path relative to <out>."""
    media = traj.media
    if media.kind == "image" and media.image is not None:
        src = log.image_path(media.image.sha)
        name = f"originals/{media.image.sha}.png"
    elif media.kind == "video" and media.path and Path(media.path).exists():
        src = Path(media.path)
        suffix = src.suffix if src.suffix[1:].isalnum() and len(src.suffix) <= 6 else ".video"
        name = f"originals/{safe_part(traj.id)}{suffix}"
    else:
        return None
    if src is None:
        return None
    dest = under(out, name)  # ids and hashes were made safe above; this holds whatever changes
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
