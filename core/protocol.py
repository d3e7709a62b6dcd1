"""The Pixel Reasoner conversation protocol: prompts, tool schemas, tool-call parsing, observations.

Everything here is pure text logic, kept byte-compatible with the released checkpoint
TIGER-Lab/PixelReasoner-RL-v1 (docs/protocol.md, section 2). Messages are plain
dicts in the Hugging Face chat shape, so TRL and the backends can use them unchanged:

    {"role": "user", "content": [{"type": "image", "image": PIL.Image},
                                 {"type": "video", "video": [PIL.Image, ...]},
                                 {"type": "text", "text": "..."}]}
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

CROP_TOOL = "crop_image_normalized"
CROP_ALIASES = ("crop_image_normalized", "crop_image", "zoom_in")
FRAMES_TOOL = "select_frames"
TOOL_NAMES = CROP_ALIASES + (FRAMES_TOOL,)

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
STOP_STRINGS = (TOOL_CALL_END, IM_END, ENDOFTEXT)

SYSTEM_TEXT = "You are a helpful assistant."

GUIDELINES = {
    "vcot": (
        "\n\nGuidelines: Understand the given visual information and the user query. Determine if it is "
        "beneficial to employ the given visual operations (tools). For a video, we can look closer by "
        "`select_frames`. For an image, we can look closer by `crop_image`. Reason with the visual "
        "information step by step, and put your final answer within \\boxed{}."
    ),
    "notool": "\n\nPlease think step by step, and put your final answer within \\boxed{}.",
    "default": "\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
}
"""Texts appended to the question. `notool` runs without the tools block."""

CROP_DESCRIPTION = (
    "Zoom in on the image based on the bounding box coordinates. "
    "It is useful when the object or text in the image is too small to be seen."
)
BBOX_DESCRIPTIONS = {
    "rl": "coordinates for bounding box of the area you want to zoom in. Values should be within [0.0,1.0].",
    "legacy": "coordinates for bounding box of the area you want to zoom in. minimum value is 0 and maximum value is 1.",
}
"""`rl` is the RL-v1 release's wording; `legacy` is the earlier one kept in the release's golden prompt."""
TARGET_IMAGE_DESCRIPTION = (
    "The index of the image to crop. Index from 1 to the number of images. Choose 1 to operate on original image."
)


def crop_schema(variant: str = "rl") -> dict:
    return {
        "type": "function",
        "function": {
            "name": CROP_TOOL,
            "description": CROP_DESCRIPTION,
            "parameters": {
                "type": "object",
                "properties": {
                    "bbox_2d": {"type": "array", "description": BBOX_DESCRIPTIONS[variant], "items": {"type": "number"}},
                    "target_image": {"type": "number", "description": TARGET_IMAGE_DESCRIPTION},
                },
                "required": ["bbox_2d", "target_image"],
            },
        },
    }


def frames_schema(n_frames: int = 16) -> dict:
    return {
        "type": "function",
        "function": {
            "name": FRAMES_TOOL,
            "description": "Select frames from a video.",
            "parameters": {
                "type": "object",
                "properties": {
                    "target_frames": {
                        "type": "array",
                        "description": "List of frame indices to select from the video (no more than 8 frames in total).",
                        "items": {"type": "integer", "description": f"Frame index from 1 to {n_frames}."},
                    }
                },
                "required": ["target_frames"],
            },
        },
    }


def tools_for(is_video: bool, variant: str = "rl", n_frames: int = 16) -> list[dict]:
    """The tool schemas shown to the model: crop always, select_frames for videos."""
    tools = [crop_schema(variant)]
    if is_video:
        tools.append(frames_schema(n_frames))
    return tools


def system_prompt(tools: list[dict] | None) -> str:
    """System text with the Qwen (Hermes-style) tools block, as the release renders it."""
    if not tools:
        return SYSTEM_TEXT
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        f"{SYSTEM_TEXT}\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{lines}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def clean_text(text: str) -> str:
    """Text safe to encode as UTF-8: lone surrogates (from non-UTF-8 input bytes) become U+FFFD."""
    if not isinstance(text, str):
        text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # surrogatepass covers every lone surrogate, not only escaped bytes
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def question_text(question: str, choices: list[str] | None = None, guideline: str = "vcot") -> str:
    """The user's text: question, optional `choices:` block (A: ..), then the guideline."""
    text = clean_text(question)
    if choices:
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        text += "\nchoices:\n" + "\n".join(f"{letters[i]}: {c}" for i, c in enumerate(choices))
    return text + GUIDELINES[guideline]


# ---- rendering -------------------------------------------------------------------------------

def render_content(content: str | list[dict]) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        kind = part["type"]
        if kind == "text":
            parts.append(part["text"])
        elif kind == "image":
            parts.append(IMAGE_PLACEHOLDER)
        elif kind == "video":
            parts.append(VIDEO_PLACEHOLDER)
        else:
            raise ValueError(f"unknown content part type {kind!r}")
    return "".join(parts)


def render_prompt(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Render messages in the Qwen2.5-VL chat format, with one pad token per image/video.

    Backends expand each pad into the number of vision tokens the processor computes.
    A missing system message gets the default one, as Qwen's chat template does.
    """
    out = []
    if not messages or messages[0]["role"] != "system":
        out.append(f"{IM_START}system\n{SYSTEM_TEXT}{IM_END}\n")
    for m in messages:
        out.append(f"{IM_START}{m['role']}\n{render_content(m['content'])}{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def media_in(messages: list[dict]) -> tuple[list, list]:
    """Images and videos of a conversation in prompt order (what the processor must encode)."""
    images, videos = [], []
    for m in messages:
        if isinstance(m["content"], str):
            continue
        for part in m["content"]:
            if part["type"] == "image":
                images.append(part["image"])
            elif part["type"] == "video":
                videos.append(part["video"])
    return images, videos


# ---- parsing ---------------------------------------------------------------------------------

class ToolCallError(ValueError):
    """A tool call the model wrote that cannot be executed; its message is fed back to the model."""


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


def has_tool_call(text: str) -> bool:
    """True when the turn ends with a tool call (the release's rule for continuing the loop)."""
    return text.rstrip().endswith(TOOL_CALL_END) and TOOL_CALL_START in text


MAX_MESSAGE = 300
"""Longest error text fed back to the model (and shown): a 10 MB tool name is not echoed whole."""


def brief(value, limit: int = 60) -> str:
    """A model-written value quoted for an error message, cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """An error message on one screen: at most `limit` characters."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _loads(body: str, what: str):
    """json.loads where every failure (bad syntax, 4,300-digit ints, deep nesting) is a ToolCallError."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise ToolCallError(f"Invalid JSON in {what}: {e.msg} (line {e.lineno} column {e.colno}).") from None
    except RecursionError:
        raise ToolCallError(f"Invalid JSON in {what}: nested too deeply.") from None
    except (ValueError, OverflowError, MemoryError) as e:  # e.g. "Exceeds the limit (4300 digits)"
        raise ToolCallError(f"Invalid JSON in {what}: {brief(str(e), 120)}") from None


def parse_tool_call(text: str) -> ToolCall:
    """Parse the last <tool_call> block of a turn. Raises ToolCallError with a model-facing message
    (never anything else: model output is untrusted input)."""
    if not isinstance(text, str) or TOOL_CALL_START not in text:
        raise ToolCallError("No <tool_call> block found.")
    body = text.rsplit(TOOL_CALL_START, 1)[1].split(TOOL_CALL_END, 1)[0].strip()
    obj = _loads(body, "tool call")
    if not isinstance(obj, dict):
        raise ToolCallError('A tool call must be a JSON object {"name": ..., "arguments": {...}}.')
    name, args = obj.get("name"), obj.get("arguments", {})
    if not isinstance(name, str):
        raise ToolCallError('A tool call needs a "name" string.')
    if isinstance(args, str):  # some models double-encode arguments
        args = _loads(args, "tool call arguments")
    if not isinstance(args, dict):
        raise ToolCallError('"arguments" must be a JSON object.')
    if name not in TOOL_NAMES:
        raise ToolCallError(f"Unknown tool `{brief(name)}`. Available tools: {CROP_TOOL}, {FRAMES_TOOL}.")
    return ToolCall(name=name, arguments=args)


def format_tool_call(name: str, arguments: dict) -> str:
    """The tool-call text as the released model writes it (used by synthetic traces and tests)."""
    return f"{TOOL_CALL_START}\n{json.dumps({'name': name, 'arguments': arguments})}\n{TOOL_CALL_END}"


def require_number(value: Any, what: str) -> float:
    """A finite real number (bools and strings rejected), else a model-facing error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolCallError(f"`{what}` must be a number, got {brief(value)}.")
    try:
        number = float(value)  # an int past 1e308 overflows here
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        shown = brief(str(value)) if isinstance(value, float) else "an integer too large for a float"
        raise ToolCallError(f"`{what}` must be a finite number, got {shown}.")
    return number


# ---- observations ----------------------------------------------------------------------------

def crop_observation(width: int, height: int) -> str:
    return f"\nHere is the cropped image (Image Size: {width}x{height}):"


def frames_observation(width: int, height: int, first: int, last: int) -> str:
    return f"\nHere are the selected frames (Frame Size: {width}x{height}, Numbered {first} to {last}):"


def error_observation(message: str) -> str:
    return f"\nExecution error:\n{message}\n"
