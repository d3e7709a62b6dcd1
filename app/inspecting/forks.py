"""Forks in the Studio: a branch made from one step of a session, its place in the session table, and
"Keep as correction" (a fork that ends right becomes training data for the Annotate → Export path).

Pure functions over rows and trajectories where they can be; `keep_as_correction` writes one annotation.
"""
from __future__ import annotations

from typing import Iterator

from PIL import Image

from app.public.names import public_model_name
from app.shared.session import source_image, step_picture
from core.backends.base import Backend, GenerationParams
from core.fork import Edit, ForkError, run_fork, start_fork, task_of
from core.loop import Done, StepDone, StepStart, TextDelta
from core.recorder import Recorder
from core.trajectory import Step, Trajectory

EDIT_LABELS = {"box": "wrong box", "target_image": "wrong box", "frames": "wrong frame"}
KEPT = "kept from a fork"  # the comment that marks an annotation made by Keep as correction


def fork_edit(kind: str, box: list[float] | None = None, frames: str = "", text: str = "") -> Edit:
    """The edit a user asked for: a box drawn on the original image (the crop then targets it), typed
    frames ("3, 5, 7") or a whole new text. Raises ForkError with a one-line reason."""
    if kind == "box":
        if not box or len(box) != 4:
            raise ForkError("draw the new box first: two clicks on the picture")
        return Edit(box=[round(float(v), 4) for v in box], target_image=1)
    if kind == "frames":
        try:
            numbers = [int(v) for v in frames.replace(",", " ").split()]
        except ValueError:
            raise ForkError(f"frames are whole numbers such as 3, 5, 7, not {frames[:40]!r}") from None
        return Edit(frames=numbers)
    if kind == "text":
        if not text.strip():
            raise ForkError("type the step's new text")
        return Edit(text=text)
    raise ForkError(f"unknown kind of edit {kind!r}")


def correction_of(fork: Trajectory) -> dict:
    """The annotation that makes a fork training data: its edited step carries the corrected text (the
    call as edited); the steps after it, unannotated, are trained as they are. Only a fork that ends
    right qualifies (ValueError otherwise)."""
    link = fork.meta.get("fork_of")
    if not isinstance(link, dict) or not isinstance(link.get("step"), int):
        raise ValueError("this session is not a fork")
    if fork.correct is not True:
        verdict = "no known truth" if fork.correct is None else "a wrong answer"
        raise ValueError(f"only a fork that ends right can be kept as a correction; this one has {verdict}")
    k = link["step"]
    edit = fork.meta.get("fork_edit") or {}
    label = next((EDIT_LABELS[key] for key in edit if key in EDIT_LABELS), "other")
    return {"step_idx": k, "label": label, "corrected_text": fork.steps[k].text,
            "comment": f"{KEPT} of {str(link.get('session'))[:12]} at step {k}"}


def keep_as_correction(log, fork_id: str) -> tuple[int, bool]:
    """Annotate the fork (see `correction_of`); returns the annotation id and whether it is new (keeping
    the same fork twice adds nothing)."""
    ann = correction_of(log.get_trajectory(fork_id))
    for old in log.list_annotations(fork_id):
        if old["step_idx"] == ann["step_idx"] and old["corrected_text"] == ann["corrected_text"]:
            return old["id"], False
    return log.add_annotation(fork_id, **ann), True


# ---- the sessions table: forks under their parent -------------------------------------------------------

MAX_DEPTH = 4  # forks of forks shown nested this deep; deeper ones stay where the page lists them


def nest_forks(log, rows: list[dict], owner: str | None = None) -> list[tuple[dict, int]]:
    """The page's rows with each session's forks right under it (depth 1, their forks depth 2, ...):
    a fork whose parent is on the page moves under it; a fork of a parent elsewhere stays in place."""
    on_page = {r["id"] for r in rows}
    children: dict[str, list[dict]] = {}
    level = [r["id"] for r in rows]
    for _ in range(MAX_DEPTH):
        found = log.forks(level, owner) if level else {}
        level = []
        for parent, forks in found.items():
            children[parent] = forks
            level += [f["id"] for f in forks]
    out: list[tuple[dict, int]] = []

    def add(row: dict, depth: int) -> None:
        out.append((row, depth))
        for child in children.get(row["id"], []) if depth < MAX_DEPTH else []:
            add(child, depth + 1)

    for row in rows:
        if row.get("fork_of") not in on_page:
            add(row, 0)
    return out


def fork_label(row: dict, depth: int) -> str:
    """The question cell's prefix of a fork: where it branched (indented under its parent)."""
    if not row.get("fork_of"):
        return ""
    where = f"fork at step {(row.get('fork_step') or 0) + 1}"
    return ("\u2003" * max(depth - 1, 0) + f"↳ {where} · ") if depth else f"[{where} of {row['fork_of'][:8]}] "



# ---- one fork, streamed and logged -------------------------------------------------------------------------

def step_markdown(step: Step, edited: bool) -> str:
    """One finished step of the fork: what it called and got back, then its raw text."""
    head = f"**Step {step.index + 1}**" + (" · ✏️ edited" if edited else "")
    if step.error:
        head += f" · ⚠️ {step.error}"
    elif step.frames:
        head += f" · select_frames {step.frames}"
    elif step.tool:
        size = f" → {step.images[0].width}×{step.images[0].height}" if step.images else ""
        head += f" · {step.tool} of image {step.target_image}, box {step.box_px} px{size}"
    return f"{head}\n\n```text\n{step.text.strip()}\n```"


def answer_markdown(traj: Trajectory) -> str:
    mark = {True: " ✅", False: " ❌"}.get(traj.correct, "")
    truth = f" (truth: {traj.ground_truth})" if traj.ground_truth is not None else ""
    return f"**Answer: {traj.answer}**{mark}{truth} · {traj.status} · fork session `{traj.id}`"


def stream_fork(log, backend: Backend, parent_id: str, k: int, edit: Edit, max_pixels: int,
                owner: str | None = None, params: GenerationParams | None = None, quota_key: str | None = None
                ) -> Iterator[tuple[str, Image.Image | None, Trajectory]]:
    """Fork session `parent_id` at step K and run it, logging each step as it finishes; yields (the
    fork's steps as markdown, the edited step's picture, the trajectory) after every event. Raises
    ForkError or MediaError (before anything is logged) when the fork cannot be made."""
    parent = log.get_trajectory(parent_id)
    task = task_of(parent, log.image_path, max_pixels)
    episode, text = start_fork(backend, parent, k, edit, task, log.images)
    traj = episode.trajectory
    if owner is not None:  # a public visitor's fork: the model's public name, no server path or URL
        traj.model = public_model_name(backend.model_id)
    recorder = Recorder(log, "app")
    recorder.start(traj, owner=owner, quota_key=quota_key)
    done: list[str] = [f"Fork of `{parent.id}` at step {k + 1} · {backend.name} `{traj.model}`"]
    pending, picture, finished = "", None, False
    try:
        for event in run_fork(backend, episode, text, params or GenerationParams(max_new_tokens=512),
                              scorer=parent.scorer or "text"):
            if isinstance(event, StepStart):
                pending = f"**Step {event.index + 1}** …\n\n"
            elif isinstance(event, TextDelta):
                pending += event.text
            elif isinstance(event, StepDone):
                recorder.step(traj.id, event.step)
                done.append(step_markdown(event.step, event.step.index == k))
                pending = ""
                if event.step.index == k:
                    picture = step_picture(log, traj, k, source_image(log, parent))
            elif isinstance(event, Done):
                recorder.finish(traj)
                finished = True
                done.append(answer_markdown(traj))
            yield "\n\n".join(done + ([pending] if pending else [])), picture, traj
    finally:
        if not finished:
            log.set_status(traj.id, "unfinished")
