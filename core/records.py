"""The record format shared by data building, export, SFT, RL and evaluation (torch-free): reading
records (ours and the released PixelReasoner-SFT-Data), writing them from trajectories, the typed
task a record names (`TaskRecord`, `meta.task`), and turning records into model-ready messages.

A record on disk is one JSON object: {"id", "messages", "train_turns" (optional, one bool per
assistant message), "meta"}. Messages follow the released shape (Qwen message template) with media
as paths relative to the dataset folder: {"type": "image", "image": "images/ab/<sha>.png"},
{"type": "video", "video": "videos/x.mp4" | [frame paths]}.

The released data keeps its message list under "message_list" (older dumps use "messages" or
"conversations"), as a JSON list or JSONL; all are accepted. Where a record has no train_turns,
every assistant turn is trained (the released trainer's position-from-the-end rule needs knowledge
of the trace kind that the file does not carry).
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from core import protocol as P
from core.media import Video, load_image
from core.operations import PixelLimits, resize_for_model
from core.trajectory import Trajectory

log = logging.getLogger(__name__)

MESSAGE_KEYS = ("messages", "message_list", "conversations")
FRAMES_OBSERVATION_PREFIX = "\nHere are the selected frames"


class DataError(ValueError):
    """A data file or record that cannot be used, with a message naming the file and line."""


@dataclass
class TaskRecord:
    """`meta.task` of a record: the question asked on the original full-resolution media, and its
    ground truth. Evaluation and RL re-ask it (the record's own images are the model's small views)."""

    question: str
    answer: str | int | float
    category: str
    media: str  # relative to the dataset folder: originals/<id>.png or videos/<id>.mp4
    kind: str = "image"  # "video", else an image
    choices: list[str] | None = None
    target: list[float] | None = None  # synthetic items: the normalized box that holds the answer
    visible_frames: list[int] | None = None  # synthetic videos: the overview frames that show it

    REQUIRED = ("question", "answer", "category", "media", "kind")

    def to_dict(self) -> dict:
        d = {"question": self.question, "answer": self.answer, "category": self.category, "media": self.media,
             "kind": self.kind}
        for key in ("choices", "target", "visible_frames"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_meta(cls, meta: dict | None, where: str) -> "TaskRecord":
        """The task of a record's `meta`; a clear error naming `where` when it is missing or incomplete."""
        task = (meta or {}).get("task")
        if not isinstance(task, dict):
            raise DataError(f"{where}: missing meta.task (a TinyZoom record names its question and media there)")
        for key in cls.REQUIRED:
            if task.get(key) in (None, ""):
                raise DataError(f"{where}: missing meta.task.{key}")
        return cls(**{k: task.get(k) for k in cls.__dataclass_fields__ if k in task})


@dataclass
class SFTRecord:
    id: str
    messages: list[dict]
    train_turns: list[bool] | None = None
    meta: dict = field(default_factory=dict)
    root: Path = Path(".")  # folder that relative media paths are resolved against

    @property
    def n_assistant(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "assistant")

    def to_dict(self) -> dict:
        d = {"id": self.id, "messages": self.messages, "meta": self.meta}
        if self.train_turns is not None:
            d["train_turns"] = self.train_turns
        return d


# ---- reading ---------------------------------------------------------------------------------

def _normalize_content(content, where: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DataError(f"{where}: message content must be a string or a list of parts")
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
            continue
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind in ("image", "image_url"):
            ref = part.get("image") or part.get("image_url") or part.get("path")
            if isinstance(ref, dict):
                ref = ref.get("url")
            if not ref:
                raise DataError(f"{where}: image part without a path")
            parts.append({"type": "image", "image": ref})
        elif kind == "video":
            ref = part.get("video") or part.get("path")
            if not ref:
                raise DataError(f"{where}: video part without a path")
            parts.append({"type": "video", "video": ref})
        else:
            raise DataError(f"{where}: unknown content part type {kind!r}")
    return parts


def parse_record(obj: dict, root: Path, where: str, index: int = 0) -> SFTRecord:
    """One record in our format or the released one."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a record must be a JSON object")
    key = next((k for k in MESSAGE_KEYS if k in obj), None)
    if key is None:
        raise DataError(f"{where}: no message list (expected one of {', '.join(MESSAGE_KEYS)})")
    messages = []
    for m in obj[key]:
        role = m.get("role") or {"human": "user", "gpt": "assistant"}.get(m.get("from", ""), "")
        if role not in ("system", "user", "assistant"):
            raise DataError(f"{where}: unknown role {role!r}")
        messages.append({"role": role, "content": _normalize_content(m.get("content", m.get("value")), where)})
    rec = SFTRecord(id=str(obj.get("id", obj.get("qid", f"{where}"))), messages=messages,
                    train_turns=obj.get("train_turns"), meta=obj.get("meta", {}), root=root)
    if rec.n_assistant == 0:
        raise DataError(f"{where}: no assistant turn to train on")
    if rec.train_turns is not None and len(rec.train_turns) != rec.n_assistant:
        raise DataError(f"{where}: train_turns has {len(rec.train_turns)} entries for {rec.n_assistant} assistant turns")
    return rec


def record_category(rec: SFTRecord) -> str:
    """A record's task category ("zoom_needed", ..., "closeup" for close-ups), "other" where it has none
    (e.g. the released data)."""
    return (rec.meta.get("task") or {}).get("category") or rec.meta.get("category") or "other"


def record_answer(rec: SFTRecord) -> str | None:
    """A synthetic record's ground-truth answer, as text; None where it has none (e.g. the released data)."""
    answer = (rec.meta.get("task") or {}).get("answer")
    return None if answer is None else str(answer)


def repeat_by_category(records: list[SFTRecord], repeat: dict[str, float]) -> list[SFTRecord]:
    """The records with each category's share reweighted: a category listed with r appears int(r) times,
    plus the first fraction of it once more (r = 0.5: its first half; 0: dropped); unlisted ones once.
    Each pass keeps the records' order, so an empty `repeat` changes nothing.
    Why: the SFT mix decides which skills the LM learns to read from the picture (README, "Positions")."""
    categories = [record_category(rec) for rec in records]
    sizes = Counter(categories)
    unknown = sorted(set(repeat) - set(sizes))
    if unknown:  # a misspelt or renamed category would otherwise leave the mix silently unchanged
        raise DataError(f"repeat names categories the data lacks: {', '.join(unknown)} "
                        f"(it has: {', '.join(sorted(sizes))})")
    copies, seen = [], Counter()
    for c in categories:  # each record's count: int(r), and one more for the first fraction of its category
        r = repeat.get(c, 1)
        copies.append(int(r) + (seen[c] < round(sizes[c] * (r - int(r)))))
        seen[c] += 1
    return [rec for k in range(max(copies, default=0)) for rec, n in zip(records, copies) if n > k]


def newest_dataset(path: str | Path, split: str = "train") -> Path:
    """`path` itself when it holds `<split>.jsonl` (or is a file); for a folder of datasets (such as
    data/exports) the newest one that holds it; a DataError saying what to give when there is none."""
    path = Path(path)
    if path.is_file() or (path / f"{split}.jsonl").is_file():
        return path
    found = sorted((d / f"{split}.jsonl" for d in path.iterdir() if (d / f"{split}.jsonl").is_file()),
                   key=lambda f: f.stat().st_mtime) if path.is_dir() else []
    if not found:
        raise DataError(f"{path}: no {split}.jsonl there nor in a folder inside it; give data=<a dataset folder> "
                        "(an annotation export: the Annotate tab's Export, or `python -m train synth`)")
    log.info("data: the newest dataset in %s: %s", path, found[-1].parent)
    return found[-1].parent


def load_sft_records(path: str | Path, split: str = "train", limit: int | None = None) -> list[SFTRecord]:
    """Records from a dataset folder (<path>/<split>.jsonl) or a .jsonl / .json file."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.exists():
        raise DataError(f"{path}: no such file")
    root = path.parent
    text = path.read_text(encoding="utf-8")
    records = []
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON: {e}") from None
        data = data if isinstance(data, list) else [data]
        for i, obj in enumerate(data[:limit] if limit else data):
            records.append(parse_record(obj, root, f"{path}[{i}]", i))
        return records
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON: {e}") from None
        records.append(parse_record(obj, root, f"{path}:{lineno}"))
        if limit and len(records) >= limit:
            break
    return records


# ---- writing ---------------------------------------------------------------------------------

def trajectory_to_sft_record(traj: Trajectory, image_store, train_turns: list[bool] | None = None,
                             relative_to: str | Path | None = None) -> dict:
    """A trajectory as an SFT record, images as paths of a DiskImageStore (relative when asked).

    The first image is the model's view of the input, so the record trains on exactly what the
    model saw; observation images are the step images as fed back.
    """
    if not hasattr(image_store, "path"):
        raise DataError("exporting a trajectory needs a DiskImageStore (images must be files)")
    if train_turns is not None and len(train_turns) != len(traj.steps):
        raise DataError(f"train_turns has {len(train_turns)} entries for {len(traj.steps)} steps")

    def ref(r) -> str:
        p = Path(image_store.path(r.sha))
        return str(p.relative_to(relative_to)) if relative_to else str(p)

    media = traj.media
    is_video = media.kind in ("video", "frames")
    prompt_variant = traj.config.get("prompt_variant", "rl")
    tools = P.tools_for(is_video, prompt_variant, len(media.overview) or 16) if traj.tools_enabled else None
    if is_video:
        first = {"type": "video", "video": [ref(r) for r in media.overview]}
    else:
        view = media.model_view or media.image
        if view is None:
            raise DataError(f"trajectory {traj.id} has no image")
        first = {"type": "image", "image": ref(view)}
    messages = [{"role": "system", "content": P.system_prompt(tools)},
                {"role": "user", "content": [first, {"type": "text", "text": P.question_text(
                    traj.question, traj.choices, traj.guideline)}]}]
    for step in traj.steps:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": step.text}]})
        if step.observation is not None:
            messages.append({"role": "user", "content": [{"type": "text", "text": step.observation}]
                             + [{"type": "image", "image": ref(r)} for r in step.images]})
    meta = dict(traj.meta)
    meta.update({"question": traj.question, "answer": traj.ground_truth, "source_trajectory": traj.id})
    images: list[str] = []  # every picture in conversation order: the `images` column of datasets
    for m in messages[1:]:
        for part in m["content"]:
            if part["type"] == "image":
                images.append(part["image"])
            elif part["type"] == "video":
                images.extend(part["video"])
    rec = {"id": traj.id, "messages": messages, "images": images, "meta": meta}
    if train_turns is not None:
        rec["train_turns"] = list(train_turns)
    return rec


def write_dataset_card(folder: str | Path, splits: dict[str, str], title: str, about: str,
                       extra_configs: dict[str, str] | None = None) -> Path:
    """README.md with the `configs` YAML `datasets.load_dataset(folder)` reads: `splits` maps each
    split to its .jsonl file (the folder's images/ would otherwise make it guess two formats);
    `extra_configs` names other files as configs of their own (e.g. labels)."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    lines += [f"  - split: {split}\n    path: {file}" for split, file in splits.items()]
    for name, file in (extra_configs or {}).items():
        lines += [f"- config_name: {name}", "  data_files:", f"  - split: train\n    path: {file}"]
    lines += ["---", "", f"# {title}", "", about, "", "```python",
              "from datasets import Image, Sequence, load_dataset", "",
              'ds = load_dataset("path/to/this/folder")',
              "# `images`: every picture of a record in conversation order, as paths relative to this folder",
              'ds = ds.map(lambda r: {"images": [f"path/to/this/folder/{p}" for p in r["images"]]})',
              'ds = ds.cast_column("images", Sequence(Image()))', "```", ""]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ---- to model-ready messages -----------------------------------------------------------------

def _resolve(root: Path, ref: str) -> Path:
    p = Path(ref)
    return p if p.is_absolute() else root / p


def _video_frames(root: Path, ref, limits: PixelLimits) -> list[Image.Image]:
    if isinstance(ref, list):
        frames = [load_image(_resolve(root, r)) for r in ref]
    else:
        frames = Video.from_file(_resolve(root, ref)).overview
    return [resize_for_model(f, limits.frame_min, limits.video_frame_max) for f in frames]


def record_to_messages(record: SFTRecord, limits: PixelLimits) -> list[dict]:
    """Messages with PIL images sized as the loop would size them under `limits`.

    The first image uses the first-image limits, images after a select_frames observation the
    frame limits, other observation images the crop limits. Already-sized images pass unchanged.
    """
    out, seen_first = [], False
    for m in record.messages:
        if isinstance(m["content"], str):
            out.append({"role": m["role"], "content": m["content"]})
            continue
        text = "".join(p["text"] for p in m["content"] if p["type"] == "text")
        is_frames = text.startswith(FRAMES_OBSERVATION_PREFIX)
        parts = []
        for p in m["content"]:
            if p["type"] == "image":
                img = load_image(_resolve(record.root, p["image"]))
                if not seen_first:
                    lo, hi = limits.first_min, limits.first_max
                elif is_frames:
                    lo, hi = limits.frame_min, limits.frame_max
                else:
                    lo, hi = limits.crop_min, limits.crop_max
                parts.append({"type": "image", "image": resize_for_model(img, lo, hi)})
                seen_first = True
            elif p["type"] == "video":
                parts.append({"type": "video", "video": _video_frames(record.root, p["video"], limits)})
                seen_first = True
            else:
                parts.append(dict(p))
        out.append({"role": m["role"], "content": parts})
    return out
