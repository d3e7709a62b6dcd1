"""The Trajectory record: the one plain structure the loop produces and everything else consumes.

The app stores and renders it, eval scores it, training turns it into SFT/RL data. Images are
referenced by content hash (see core.media.image_sha), so a trajectory is small JSON that can be
stored, replayed and exported without copying pictures.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class ImageRef:
    sha: str
    width: int
    height: int


@dataclass
class Step:
    """One assistant turn and, when it called a tool, the operation's outcome."""

    index: int
    text: str  # the model's raw text for this turn
    tool: str | None = None  # canonical name of the called operation, None for a final answer
    arguments: dict | None = None
    error: str | None = None  # parse or execution error fed back to the model
    observation: str | None = None  # the text of the user turn fed back
    images: list[ImageRef] = field(default_factory=list)  # result images as the model saw them
    target_image: int | None = None
    box_norm: list[float] | None = None  # padded and clamped, in [0, 1] of the target image
    box_px: list[int] | None = None  # in the target image's pixels
    source_box_px: list[int] | None = None  # the same box in the original input's pixels, when defined
    frames: list[int] | None = None  # 1-based overview frame numbers
    tokens_in: int = 0
    tokens_out: int = 0
    gen_seconds: float = 0.0
    tool_seconds: float = 0.0
    finish_reason: str = "stop"  # stop | length | cancelled
    started_at: float = 0.0
    mean_logprob: float | None = None  # mean log-probability of the turn's tokens (None: backend gave none)
    unsure: list[dict] | None = None  # tokens under p = 0.5: {"at": char offset in text, "text", "p"}

    @property
    def is_operation(self) -> bool:
        return self.tool is not None and self.error is None


@dataclass
class Media:
    """What the question is about: an image, a video file, or pre-extracted frames."""

    kind: str  # image | video | frames
    path: str | None = None
    image: ImageRef | None = None  # the original image at full resolution
    model_view: ImageRef | None = None  # the first image as the model saw it
    overview: list[ImageRef] = field(default_factory=list)  # video overview frames as the model saw them
    frame_times: list[float] = field(default_factory=list)
    fps: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Media":
        """The Media of its JSON form (`asdict`), image references rebuilt."""
        ref = lambda r: ImageRef(**r) if r else None  # noqa: E731
        return cls(**{**d, "image": ref(d.get("image")), "model_view": ref(d.get("model_view")),
                      "overview": [ImageRef(**r) for r in d.get("overview", [])]})


@dataclass
class Trajectory:
    question: str
    media: Media
    choices: list[str] | None = None
    answer: str | None = None  # extracted final answer
    ground_truth: str | None = None
    correct: bool | None = None
    scorer: str | None = None  # the rule that judged `correct` (core.scoring.SCORERS)
    answer_confidence: float | None = None  # probability the model gave its final answer (None: no probabilities)
    familiar: bool | None = None  # the picture is like the model's training pictures (None: no reference)
    familiarity: float | None = None  # the picture's distance from them over the reference's threshold (> 1: unlike)
    steps: list[Step] = field(default_factory=list)
    status: str = "running"  # running | done | max_ops | max_images | max_tokens | cancelled | error
    error: str | None = None
    tools_enabled: bool = True
    guideline: str = "vcot"
    backend: str = ""
    model: str = ""
    config: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)
    meta: dict = field(default_factory=dict)

    @property
    def n_ops(self) -> int:
        return sum(1 for s in self.steps if s.is_operation)

    @property
    def n_errors(self) -> int:
        return sum(1 for s in self.steps if s.error)

    @property
    def final_op_failed(self) -> bool:
        """The last operation attempted failed and was never corrected (the release zeroes the reward)."""
        attempts = [s for s in self.steps if s.tool is not None or s.error is not None]
        return bool(attempts) and attempts[-1].error is not None

    def image_refs(self) -> list[ImageRef]:
        refs = [r for r in (self.media.image, self.media.model_view) if r] + list(self.media.overview)
        for s in self.steps:
            refs.extend(s.images)
        return refs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_ops"] = self.n_ops
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trajectory":
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        media = Media.from_dict(d.pop("media"))
        steps = []
        for s in d.pop("steps", []):
            s = {k: v for k, v in s.items() if k in {f.name for f in fields(Step)}}
            s["images"] = [ImageRef(**r) for r in s.get("images", [])]
            steps.append(Step(**s))
        return cls(media=media, steps=steps, **d)

    @classmethod
    def from_json(cls, text: str) -> "Trajectory":
        return cls.from_dict(json.loads(text))
