"""The robustness shift suite: TinyZoom-format test folders, each changing one thing about the pictures.

    python -m train synth --shift-suite data/shifts --per-shift 60

Each shift is `varied.CONTROL` (pictures like the original generator's) with one field changed, and
its own seed stream (`shift-<name>` splits of SUITE_SEED), apart from every training split. Each
folder is a normal TinyZoom folder (`python -m core eval --bench tinyzoom --data data/shifts/<name>`);
`python -m train shift-report` evaluates a model over all of them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from train.synth.tasks import MIX
from train.synth.varied import CONTROL, PRESETS, Variety

SUITE_SEED = 20_261_129
IMAGE = ("zoom_needed", "zoom_optional", "counting", "relative")
GLYPH = ("zoom_needed",)
VIDEO = ("video",)


@dataclass(frozen=True)
class Shift:
    variety: Variety
    categories: tuple[str, ...] = IMAGE  # the categories its items are drawn from (MIX shares among them)
    note: str = ""


def _s(categories=IMAGE, note="", **changes) -> Shift:
    return Shift(replace(CONTROL, **changes), categories, note)


SHIFTS: dict[str, Shift] = {
    "control": _s(note="look-alike of the original generator"),
    "jpeg50": _s(jpeg=(50, 50)),
    "jpeg15": _s(jpeg=(15, 15)),
    "canvas_640x480": _s(size=(640, 480)),
    "canvas_1600x900": _s(size=(1600, 900)),
    "canvas_900x1600": _s(size=(900, 1600)),
    "canvas_3000x2000_same_glyph": _s(size=(3000, 2000), glyph_scaled_rate=0.0,
                                      note="glyph as many px as the original"),
    "canvas_3000x2000_scaled_glyph": _s(size=(3000, 2000)),
    "canvas_4200x1800": _s(size=(4200, 1800), glyph_scaled_rate=0.0),
    "bg_white": _s(backgrounds=("white",)),
    "bg_textured": _s(backgrounds=("texture",)),
    "bg_photo": _s(backgrounds=("photo",)),
    "bg_gradient": _s(backgrounds=("gradient",), note="random direction and colours"),
    "distractor_tags": _s(distractor_tags=(2, 3), note="tags of other colours"),
    "glyph_marks": _s(glyph_marks=(3, 5), note="glyph-like marks without a tag"),
    "extra_shapes": _s(extra_shapes=(3, 5)),
    "glyph_small": _s(GLYPH, glyph_px=(16, 20)),
    "glyph_large": _s(GLYPH, glyph_px=(40, 48)),
    "fonts": _s(GLYPH, fonts="others", note="every installed font but the original's"),
    "rotated": _s(GLYPH, rotation=10.0),
    "tag_edge": _s(GLYPH, placements=("edge",)),
    "tag_corner": _s(GLYPH, placements=("corner",)),
    "video_control": _s(VIDEO),
    "video_short": _s(VIDEO, video_frames=(6, 15), note="fewer frames than the 16-frame overview"),
    "video_brief_sign": _s(VIDEO, sign_frames=(1, 1), note="the sign shows in one frame"),
    "video_sign_edges": _s(VIDEO, sign_frames=(1, 4), sign_edge_rate=1.0, note="in the first or last frames"),
}


def shift_categories(shift: Shift, n: int) -> list[str]:
    """n categories with MIX's shares among the shift's categories (largest remainder rounding),
    interleaved so that every prefix (`--limit`) keeps the shares."""
    total = sum(MIX[c] for c in shift.categories)
    shares = {c: MIX[c] / total * n for c in shift.categories}
    counts = {c: int(v) for c, v in shares.items()}
    for c in sorted(shares, key=lambda c: shares[c] - counts[c], reverse=True)[: n - sum(counts.values())]:
        counts[c] += 1
    spread = [((j + 0.5) / counts[c], i, c) for i, c in enumerate(shift.categories) for j in range(counts[c])]
    return [c for _, _, c in sorted(spread)]


def preset(name: str) -> Variety | None:
    """A named Variety ("" / "off": None, the original generator; "control", "train", "shift:<name>")."""
    if name in ("", "off"):
        return None
    if name.startswith("shift:"):
        if name[6:] not in SHIFTS:
            raise ValueError(f"unknown shift {name[6:]!r}; choose one of {', '.join(SHIFTS)}")
        return SHIFTS[name[6:]].variety
    if name not in PRESETS:
        raise ValueError(f"unknown variety {name!r}; choose off, {', '.join(PRESETS)} or shift:<name>")
    return PRESETS[name]
