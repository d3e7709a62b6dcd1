"""Which trained tokens depend on the picture: the few that SFT must learn to read from the pixels.

In a pixel-reasoning trace almost every token is template ("The tag is too small to read. I will zoom
in on it."), predictable from the text alone; what the picture decides is a handful: where the box is
(the tenths of its coordinates), which frames to pick, and the answer. A tiny model fits the template
first and can settle on a constant box or answer, so `experiments/token_loss.py` measures these kinds apart
and SFT can weigh them up (SFTRunConfig.grounded_weight).
"""
from __future__ import annotations

GROUNDED = ("box_x", "box_y", "frames", "answer")  # the kinds whose value the picture decides


def token_kinds(pieces: list[str], answer: str | None) -> list[str]:
    """Kind of each trained token, from the decoded pieces in order (pure).

    `box_x` / `box_y`: the tenths digit of a bbox_2d's x1, x2 / y1, y2 (where the box is); `box`: its
    other digits; `frames`: a frame number, in a select_frames call or in the sentence that names the
    frames; `answer`: the first token outside a call that spells the ground truth (e.g. " K" in "The tag
    reads K."; not the 2 of "bbox_2d"), later copies (the \\boxed{} repeat) count as template;
    `template`: everything else.
    """
    kinds, text, answered = [], "", False
    for piece in pieces:
        word = piece.strip().lstrip("{[").lower()
        numeric = bool(word) and all(c.isdigit() or c == "." for c in word)
        call = text[text.rfind("<tool_call>"):] if text.rfind("<tool_call>") > text.rfind("</tool_call>") else ""
        boxes = call[call.rfind("bbox_2d"):] if "bbox_2d" in call else "]"
        frames = call[call.rfind("target_frames"):] if "target_frames" in call else "]"
        turn = text[text.rfind("<|im_end|>") + 1:]
        if call and numeric and "]" not in boxes:
            if text.endswith(".") and word.isdigit():  # a tenth: where the box is, to a tenth of the side
                kinds.append("box_y" if boxes[boxes.find("["):].count(",") % 2 else "box_x")
            else:
                kinds.append("box")
        elif word.isdigit() and (("]" not in frames) if call else "frames " in turn):
            kinds.append("frames")
        elif not answered and not call and answer and word and answer.lower().startswith(word):
            kinds.append("answer")
            answered = True
        else:
            kinds.append("template")
        text += piece
    return kinds


def token_weights(pieces: list[str], answer: str | None, weight: float) -> list[float]:
    """Loss weight of each trained token: `weight` on the grounded kinds, 1 elsewhere (pure)."""
    return [weight if kind in GROUNDED else 1.0 for kind in token_kinds(pieces, answer)]
