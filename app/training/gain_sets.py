"""Which items the gain view scores a fine-tune on, in three parts side by side:

- **trained on**: the questions of the run's training data (an annotation export's corrected
  sessions) asked again; a gain here shows the corrections were learnt, not that they generalise;
- **held out**: items like them that were never trained on: the export's own test.jsonl (corrected
  sessions the export held back) and, for sessions that came from an evaluation of a TinyZoom-format
  folder, that folder's other items of the same categories;
- **own split**: the model's own TinyZoom test split (is anything forgotten?), less any item the
  export was made from.

Each part is written as a TinyZoom folder (`<work>/<part>/test.jsonl`, media paths absolute) for
`python -m core eval --bench tinyzoom`. Choosing the items is pure (lists of records in, lists out);
reading and writing the files is at the edges.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TRAINED, HELD_OUT, OWN = "trained on", "held out", "own split"


@dataclass
class Part:
    label: str = ""  # what the gain view calls it: TRAINED, HELD_OUT, OWN, or a folder's name
    folder: str = ""  # a TinyZoom-format folder whose test.jsonl holds the part's items
    n: int = 0  # its items


# ---- choosing items (pure) ------------------------------------------------------------------------

def with_absolute_media(rec: dict, root: Path) -> dict:
    """A copy of a record whose meta.task.media is an absolute path (its folder was `root`)."""
    rec = json.loads(json.dumps(rec))
    task = rec["meta"]["task"]
    task["media"] = str((root / task["media"]).resolve())
    return rec


def askable(rec: dict) -> bool:
    """Whether a record names a question and its media (meta.task), as evaluation needs."""
    task = (rec.get("meta") or {}).get("task") or {}
    return bool(task.get("question")) and bool(task.get("media")) and task.get("answer") is not None


def source_items(records: list[dict]) -> dict[Path, set[str]]:
    """TinyZoom-format folder -> ids of its items the records were made from (an export's records
    of evaluation sessions carry meta.source_item: the item id and its media path, <folder>/originals/…)."""
    out: dict[Path, set[str]] = {}
    for rec in records:
        src = (rec.get("meta") or {}).get("source_item") or {}
        if src.get("id") is not None and src.get("media"):
            out.setdefault(Path(src["media"]).resolve().parent.parent, set()).add(str(src["id"]))
    return out


def like_them(candidates: list[dict], categories: set[str], exclude: set[str]) -> list[dict]:
    """The candidates of the given categories whose ids are not excluded."""
    return [r for r in candidates if askable(r) and str(r.get("id")) not in exclude
            and r["meta"]["task"].get("category") in categories]


def categories_of(records: list[dict]) -> set[str]:
    return {r["meta"]["task"].get("category") for r in records if askable(r)}


# ---- reading and writing ---------------------------------------------------------------------------

def read_records(path: Path) -> list[dict]:
    """The records of a jsonl file (none when it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_part(label: str, records: list[dict], folder: Path) -> Part:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                       encoding="utf-8")
    return Part(label, str(folder), len(records))


def export_parts(export: Path | None, own: Path | None, work: Path) -> list[Part]:
    """The three parts of a run trained on `export`, with `own` the model's own TinyZoom folder; a
    part without items is left out."""
    parts: list[Part] = []
    trained = read_records(export / "train.jsonl") if export else []
    held = read_records(export / "test.jsonl") if export else []
    sources = source_items(trained + held)
    chosen = {
        TRAINED: [with_absolute_media(r, export) for r in trained if askable(r)],
        HELD_OUT: [with_absolute_media(r, export) for r in held if askable(r)] + family_items(
            sources, categories_of(trained + held), skip=own),
        OWN: [with_absolute_media(r, own) for r in read_records(own / "test.jsonl")
              if askable(r) and str(r.get("id")) not in sources.get(own.resolve(), set())] if own else [],
    }
    for label, records in chosen.items():
        if records:
            parts.append(write_part(label, records, work / label.replace(" ", "-")))
    return parts


def family_items(sources: dict[Path, set[str]], categories: set[str], skip: Path | None) -> list[dict]:
    """Items of the folders the export's sessions came from, of its categories, not exported (ids
    prefixed with the folder's name: two folders may use the same ids). The own folder is skipped:
    its items are the own split."""
    out = []
    for folder, exported in sorted(sources.items()):
        if skip is not None and folder == skip.resolve():
            continue
        for rec in like_them(read_records(folder / "test.jsonl"), categories, exported):
            rec = with_absolute_media(rec, folder)
            rec["id"] = f"{folder.name}/{rec['id']}"
            out.append(rec)
    return out
