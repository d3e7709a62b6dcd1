"""The oracle what-if of evaluation: the model's first look replaced by the right one.

`python -m core eval ... --oracle-first-crop` runs each item as an `OracleEpisode`: the first turn
that crops has its box replaced by the item's `meta.task.target` (normalized, on the original image,
`target_image` 1), and on a video the first `select_frames` gets the frames that show the answer
(`meta.task.visible_frames`). The reasoning before the call stays the model's; the edited call runs
through the real operations, as a fork at that step would (core/fork.py), and the model goes on.
Accuracy with the oracle look against the model's own separates "looks in the wrong place" from
"cannot read what it sees". `meta.oracle_first_crop` records the step and the model's own arguments.
"""
from __future__ import annotations

from core import protocol as P
from core.backends.base import Generation
from core.fork import Edit, edit_text
from core.loop import Episode
from core.trajectory import Step

ORACLE_KEY = "oracle_first_crop"


def oracle_edit(text: str, is_video: bool, target: list[float] | None,
                frames: list[int] | None) -> tuple[Edit, dict] | None:
    """The edit for a turn that makes the first look (a crop, or on a video frames), with the call's own
    arguments; None for a turn that calls nothing, a garbled call or one the item has no oracle for."""
    if not P.has_tool_call(text):
        return None
    try:
        call = P.parse_tool_call(text)
    except P.ToolCallError:
        return None
    if call.name == P.FRAMES_TOOL:
        return (Edit(frames=list(frames)), call.arguments) if is_video and frames else None
    if target is None:
        return None
    return (Edit(box=list(target)) if is_video else Edit(box=list(target), target_image=1)), call.arguments


class OracleEpisode(Episode):
    """An episode whose first crop (or first frame selection, on a video) is the item's right one."""

    def __init__(self, *args, target: list[float] | None = None, frames: list[int] | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.target, self.frames = target, frames

    def advance(self, gen: Generation) -> Step:
        if ORACLE_KEY not in self.trajectory.meta and self.config.tools:
            found = oracle_edit(P.clean_text(gen.text), self.task.video is not None, self.target, self.frames)
            if found is not None:
                edit, arguments = found
                self.trajectory.meta[ORACLE_KEY] = {"step": len(self.trajectory.steps), "model_arguments": arguments}
                gen.text = edit_text(P.clean_text(gen.text), edit)
        return super().advance(gen)
