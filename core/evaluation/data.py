"""Evaluation items and the loaders that read them from the released data shapes.

The released evaluation data (VStar-EvalData-PixelReasoner, MVBench-EvalData-PixelReasoner, ...) is
one parquet per benchmark plus an image folder; each row has `qid`, `question` (choices already
written into it), `answer` (a letter, a number, or a list of strings for InfoVQA) and `image`, a
list of paths such as `images/xyz.jpg` relative to the download folder (the release's prepare.sh
moves the folder to `<parquet stem>_images/`, so both layouts resolve). MVBench rows set
`is_video` and list the pre-extracted frames of one video; a row may also name a plain video file
(.mp4, ...), which is decoded with PyAV. A `.jsonl`/`.json` file with the same columns works too.

TinyZoom is our synthetic test split (`python -m train synth`): `test.jsonl` records whose
`meta.task` names the question, answer, category and the original full-resolution media.

Every problem with the data is an `EvalDataError` naming the file, the row and the missing column
or media file, raised before the model is loaded.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.loop import Task
from core.media import Video, load_image
from core.records import DataError, TaskRecord

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}
FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
OVERVIEW_FRAMES = 16

# column names accepted for each field, first match wins
COLUMNS = {
    "question": ("question", "query", "prompt"),
    "answer": ("answer", "answers", "gt_answer", "ground_truth"),
    "media": ("image", "images", "video", "frames", "media"),
    "id": ("qid", "id", "question_id", "questionId"),
    "is_video": ("is_video",),
    "choices": ("options", "choices", "candidates"),
    "category": ("category", "task_type", "question_type", "task", "type", "source"),
}


class EvalDataError(ValueError):
    """Evaluation data not in the expected shape, with a message naming what is missing."""


@dataclass
class EvalItem:
    """One benchmark question: where its media is, what the answer is, how to show it to the model."""

    id: str
    question: str
    truth: str | list[str]
    kind: str  # image | frames | video
    media: list[str] = field(default_factory=list)  # resolved paths (one image, the frames, or one video)
    choices: list[str] | None = None  # options rendered after the question (from an options column)
    score_choices: list[str] | None = None  # options for scoring: rendered, or parsed from the question
    category: str = ""
    image_bytes: bytes | None = None  # an image embedded in the parquet (HF Image feature)
    meta: dict = field(default_factory=dict)
    target: list[float] | None = None  # TinyZoom: meta.task.target, the normalized box holding the answer
    visible_frames: list[int] | None = None  # TinyZoom videos: the overview frames that show the answer

    def task(self, task_id: str | None = None, frames: int = OVERVIEW_FRAMES) -> Task:
        """Load the media (full resolution) into a loop Task. Raises core.media.MediaError."""
        truth = self.truth if isinstance(self.truth, str) else (self.truth[0] if self.truth else "")
        kw: dict[str, Any] = {}
        if self.kind == "image":
            kw["image"] = load_image(self.image_bytes if self.image_bytes is not None else self.media[0])
        elif self.kind == "frames":
            kw["video"] = Video.from_frame_files(self.media, n=frames)
        else:
            kw["video"] = Video.from_file(self.media[0], n=frames)
        return Task(self.question, choices=self.choices, answer=truth, id=task_id or self.id,
                    media_path=self.media[0] if len(self.media) == 1 else (str(Path(self.media[0]).parent)
                                                                          if self.media else None),
                    meta={"category": self.category, **self.meta}, **kw)


# ---- helpers ---------------------------------------------------------------------------------

_CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])\)?\s*[:.)]\s*(.+?)\s*$")


def parse_choices(question: str) -> list[str] | None:
    """Options written into a question ("choices:\\nA: Lion\\nB: Sheep", "(A) Lion", "A. Lion").

    Only a run of lines lettered A, B, C... in order counts, so ordinary sentences are not options.
    """
    found: list[str] = []
    for line in question.splitlines():
        m = _CHOICE_LINE.match(line)
        if m and ord(m.group(1)) - ord("A") == len(found):
            found.append(m.group(2))
        elif m and m.group(1) == "A":
            found = [m.group(2)]
    return found if len(found) >= 2 else None


def _plain(value: Any) -> Any:
    """numpy arrays and scalars from pandas as plain Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return value != value  # NaN
    except (TypeError, ValueError):
        return False


def _pick(columns: list[str], field_name: str) -> str | None:
    for name in COLUMNS[field_name]:
        if name in columns:
            return name
    return None


def media_candidates(value: str, root: Path, stem: str) -> list[Path]:
    """Where a media path from the table may be, in order: as given, then the release's layouts."""
    p = Path(value)
    cands = [p] if p.is_absolute() else [root / p]
    parts = p.parts
    cut = max((i for i, part in enumerate(parts) if part == "images" or part.endswith("_images")), default=None)
    tail = Path(*parts[cut + 1:]) if cut is not None and cut + 1 < len(parts) else Path(p.name)
    for folder in (f"{stem}_images", "images"):
        cands.append(root / folder / tail)
    if not p.is_absolute():
        cands.append(root / f"{stem}_images" / p)
    seen: list[Path] = []
    for c in cands:
        if c not in seen:
            seen.append(c)
    return seen


def resolve_media(value: str, root: Path, stem: str, where: str) -> str:
    cands = media_candidates(value, root, stem)
    for c in cands:
        if c.exists():
            return str(c)
    raise EvalDataError(f"{where}: media file not found: {value!r} (looked for "
                        + ", ".join(str(c) for c in cands) + ")")


# ---- tables: the released parquet (or jsonl with the same columns) ---------------------------

def find_table(data: str | Path) -> Path:
    """The parquet/jsonl file itself, or the only one inside a folder."""
    path = Path(data)
    if not path.exists():
        raise EvalDataError(f"{path}: no such file or folder")
    if path.is_file():
        return path
    tables = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".jsonl", ".json") and p.is_file()
                    and p.name not in ("dataset.json",))
    parquets = [p for p in tables if p.suffix == ".parquet"]
    tables = parquets or tables
    if not tables:
        raise EvalDataError(f"{path}: no .parquet (or .jsonl) file in this folder; give --data the released "
                            "parquet file or the folder holding it and its images/ folder")
    if len(tables) > 1:
        raise EvalDataError(f"{path}: several tables ({', '.join(p.name for p in tables)}); give --data one file")
    return tables[0]


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pandas as pd

        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise EvalDataError(f"{path}: not a readable parquet file: {e}") from None
        return df.to_dict(orient="records")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            return data if isinstance(data, list) else [data]
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise EvalDataError(f"{path}: not valid JSON: {e}") from None


def load_table(data: str | Path, bench: str, limit: int | None = None) -> list[EvalItem]:
    """Items from the released parquet layout (see the module docstring)."""
    path = find_table(data)
    rows = read_rows(path)
    if not rows:
        raise EvalDataError(f"{path}: the table has no rows")
    columns = list(rows[0].keys())
    cols = {f: _pick(columns, f) for f in COLUMNS}
    for required in ("question", "answer", "media"):
        if cols[required] is None:
            raise EvalDataError(f"{path}: missing column {COLUMNS[required][0]!r} (accepted names: "
                                f"{', '.join(COLUMNS[required])}; the table has: {', '.join(map(str, columns))})")
    root, stem = path.parent, path.stem
    items: list[EvalItem] = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        item_id = str(_plain(row[cols["id"]])) if cols["id"] and not _missing(row.get(cols["id"])) else str(i)
        where = f"{path.name} row {i} ({cols['id'] or 'index'} {item_id})"
        question, truth = row[cols["question"]], _plain(row[cols["answer"]])
        if not isinstance(question, str) or not question.strip():
            raise EvalDataError(f"{where}: empty {cols['question']!r}")
        if _missing(truth) or truth == [] or truth == "":
            raise EvalDataError(f"{where}: empty {cols['answer']!r}")
        truth = [str(t) for t in truth] if isinstance(truth, (list, tuple)) else str(truth)
        is_video = bool(_plain(row.get(cols["is_video"]))) if cols["is_video"] else False
        kind, media, image_bytes = _row_media(_plain(row[cols["media"]]), is_video, root, stem, where)
        choices = _plain(row.get(cols["choices"])) if cols["choices"] else None
        choices = [str(c) for c in choices] if isinstance(choices, list) and choices else None
        category = row.get(cols["category"]) if cols["category"] else None
        items.append(EvalItem(
            id=item_id, question=question, truth=truth, kind=kind, media=media, choices=choices,
            score_choices=choices or parse_choices(question),
            category=str(category) if not _missing(category) and category != "" else bench,
            image_bytes=image_bytes))
    return items


def _row_media(value: Any, is_video: bool, root: Path, stem: str, where: str) -> tuple[str, list[str], bytes | None]:
    if isinstance(value, dict):  # a Hugging Face Image feature: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            return "image", [value.get("path") or "embedded"], bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, bytes):
        return "image", ["embedded"], value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise EvalDataError(f"{where}: the media column holds {str(value)[:80]!r}; expected a path or a list of paths")
    paths = [resolve_media(v, root, stem, where) for v in value]
    if len(paths) == 1 and Path(paths[0]).is_dir():  # a folder of extracted frames
        frames = sorted(str(p) for p in Path(paths[0]).iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not frames:
            raise EvalDataError(f"{where}: frame folder {paths[0]} holds no images")
        return "frames", frames, None
    if len(paths) == 1 and Path(paths[0]).suffix.lower() in VIDEO_SUFFIXES:
        return "video", paths, None
    if is_video or len(paths) > 1:
        if len(paths) > 1 and not is_video:
            raise EvalDataError(f"{where}: {len(paths)} images in one row but is_video is not set; "
                                "multi-image questions are not supported")
        return "frames", paths, None
    return "image", paths, None


# ---- TinyZoom --------------------------------------------------------------------------------

def load_tinyzoom(data: str | Path, split: str = "test", limit: int | None = None,
                  categories: list[str] | None = None) -> list[EvalItem]:
    """The TinyZoom split (`<data>/test.jsonl`, or a .jsonl file): records with meta.task."""
    path = Path(data)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise EvalDataError(f"{path}: no such file (build it with `python -m train synth --out {Path(data)}`)")
    root = path.parent
    items: list[EvalItem] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalDataError(f"{where}: not valid JSON: {e}") from None
        try:
            task = TaskRecord.from_meta(rec.get("meta"), where)
        except DataError as e:
            raise EvalDataError(str(e)) from None
        if categories and task.category not in categories:
            continue
        media = root / task.media
        if not media.exists():
            raise EvalDataError(f"{where}: media file not found: {media}")
        items.append(EvalItem(id=str(rec.get("id", lineno)), question=task.question, truth=str(task.answer),
                              kind="video" if task.kind == "video" else "image", media=[str(media)], choices=task.choices, score_choices=task.choices,
                              category=task.category, target=task.target, visible_frames=task.visible_frames))
        if limit and len(items) >= limit:
            break
    if not items:
        raise EvalDataError(f"{path}: no items" + (f" in categories {categories}" if categories else ""))
    return items


def load_items(bench: str, data: str | Path, limit: int | None = None, **kw) -> list[EvalItem]:
    """The items of one benchmark, validated (every media file exists) before any model is loaded."""
    if bench == "tinyzoom":
        return load_tinyzoom(data, limit=limit, **kw)
    if kw:
        raise EvalDataError(f"options {', '.join(kw)} only apply to --bench tinyzoom")
    return load_table(data, bench, limit)

