"""One session as the tabs draw it: its source picture (from the store, else its media path), what
each step did as a picture (a crop beside its source box, or the selected frames strip), its header
line, and the overlap of two boxes. Inspect, Annotate (and whatever else shows a session) use these."""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageDraw

from app.shared.confidence import honesty_line, plural
from app.shared.render import crop_beside_source, draw_boxes, frame_label, frame_strip
from core.media import MediaError, load_image
from core.sessionlog import SessionLog
from core.trajectory import Trajectory

logger = logging.getLogger(__name__)

CORRECTED_COLOR = (0, 200, 0)
MAX_SIDE = 1000  # the longest side of the picture a box is drawn on


def stored_image(log: SessionLog, sha: str | None) -> Image.Image | None:
    """A picture of the image store by its hash; None (logged) when it is missing or unreadable."""
    if not sha:
        return None
    path = log.image_path(sha)
    if path is None:
        return None
    try:
        return load_image(path)
    except MediaError as e:
        logger.warning("image %s unreadable: %s", sha, e)
        return None


def source_image(log: SessionLog, traj: Trajectory) -> Image.Image | None:
    """The original image (from the store, else from the media path when it still exists)."""
    ref = traj.media.image
    img = stored_image(log, ref.sha if ref else None)
    if img is None and traj.media.kind == "image" and traj.media.path and Path(traj.media.path).exists():
        try:
            img = load_image(traj.media.path)
        except MediaError:
            img = None
    return img


def first_picture(log: SessionLog, traj: Trajectory) -> Image.Image | None:
    """The picture to draw on: the source image, else a video's first overview frame."""
    original = source_image(log, traj)
    if original is None and traj.media.overview:
        original = stored_image(log, traj.media.overview[0].sha)
    return original


def step_picture(log: SessionLog, traj: Trajectory, idx: int, original: Image.Image | None) -> Image.Image | None:
    """What step idx did, drawn: crop beside its source box, or the selected frames strip."""
    if not 0 <= idx < len(traj.steps):
        return None
    step = traj.steps[idx]
    results = [im for im in (stored_image(log, r.sha) for r in step.images) if im is not None]
    if step.frames and results:
        times = traj.media.frame_times
        return frame_strip(results, [frame_label(k, times[k - 1] if k <= len(times) else None) for k in step.frames])
    if step.box_px and results:
        if step.source_box_px and original is not None:
            return crop_beside_source(original, step.source_box_px, results[0], step_color=idx)
        frame = stored_image(log, traj.media.overview[step.target_image - 1].sha) \
            if traj.media.overview and step.target_image and step.target_image <= len(traj.media.overview) else None
        if frame is not None and step.box_norm:
            x0, y0, x1, y1 = step.box_norm
            box = [x0 * frame.width, y0 * frame.height, x1 * frame.width, y1 * frame.height]
            return crop_beside_source(frame, box, results[0], step_color=idx)
        return results[0]
    return None


def header_markdown(row: dict, traj: Trajectory) -> str:
    when = datetime.fromtimestamp(row["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
    correct = {1: " ✅ correct", 0: " ❌ incorrect"}.get(row["correct"], "")
    link = f" · compared with `{row['compare_of']}`" if row.get("compare_of") else ""
    sure = honesty_line(traj)
    return (f"**{traj.question}**\n\n"
            f"answer **{traj.answer}**{correct} (truth: {traj.ground_truth or '—'}) · status **{traj.status}** · "
            f"{plural(traj.n_ops, 'operation')}, {plural(traj.n_errors, 'error')} · "
            f"{row['tokens_in']} → {row['tokens_out']} tokens · {row['seconds']:.2f} s\n\n"
            + (f"{sure}\n\n" if sure else "") +
            f"`{traj.id}` · {when} · {traj.backend} · `{traj.model}` · client {row['client']} · tools "
            f"{'on' if traj.tools_enabled else 'off'}{link}")


def iou(a, b) -> float | None:
    """Intersection over union of two [x0, y0, x1, y1] boxes; None when either is missing."""
    if not a or not b:
        return None
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def shown_scale(size: tuple[int, int]) -> float:
    """How the picture is scaled for clicking on: its longest side MAX_SIDE, small pictures enlarged too
    (at natural size a 224 px picture sat in a corner of the frame and clicks beside it were lost)."""
    return MAX_SIDE / max(size)


def overlay(original: Image.Image | None, traj, step_idx: int | None, box: list[float] | None,
            corner: list[float] | None = None) -> Image.Image | None:
    """The original with the model's boxes (the chosen step's thick) and the corrected box in green."""
    if original is None:
        return None
    scale = shown_scale(original.size)
    shown = original.convert("RGB").resize((round(original.width * scale), round(original.height * scale)),
                                           Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BICUBIC)
    steps = [s for s in traj.steps if s.source_box_px and not s.error]
    out = draw_boxes(shown, [[v * scale for v in s.source_box_px] for s in steps],
                     [f"step {s.index + 1}" for s in steps]) if steps else shown
    draw = ImageDraw.Draw(out)
    for s in steps:
        if s.index == step_idx:
            x0, y0, x1, y1 = (v * scale for v in s.source_box_px)
            draw.rectangle([x0 - 3, y0 - 3, x1 + 3, y1 + 3], outline=(255, 255, 255), width=2)
    w, h = out.size
    if box:
        draw.rectangle([box[0] * w, box[1] * h, box[2] * w, box[3] * h], outline=CORRECTED_COLOR, width=4)
        draw.text((box[0] * w + 4, box[3] * h + 3), "corrected", fill=CORRECTED_COLOR)
    if corner:
        x, y = corner[0] * w, corner[1] * h
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=CORRECTED_COLOR, width=3)
    return out


def clicked_point(original: Image.Image, index: tuple[int, int]) -> list[float]:
    """A click on the `overlay` picture (its pixels) as a point in [0, 1] of the original."""
    scale = shown_scale(original.size)
    w, h = round(original.width * scale), round(original.height * scale)
    return [min(max(index[0] / w, 0.0), 1.0), min(max(index[1] / h, 0.0), 1.0)]


def two_clicks(corner: list[float] | None, point: list[float]) -> tuple[list[float] | None, list[float] | None]:
    """The two-click box: the first click is a corner (kept), the second closes the box. Returns
    (the corner to keep, the box or None)."""
    if corner is None:
        return point, None
    x, y = point
    return None, [round(min(corner[0], x), 4), round(min(corner[1], y), 4), round(max(corner[0], x), 4),
                  round(max(corner[1], y), 4)]
