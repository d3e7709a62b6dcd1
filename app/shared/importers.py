"""Imports of runs made elsewhere: files parsed into our Trajectory record and written to the
session log (the Inspect tab's Import calls `import_files`).

Accepted shapes (one JSON object, a JSON list, or JSON lines):
- our own trajectory JSON (`python -m core ask --json`, eval items' "trajectory"): used as is;
- message-list records, as in the release's data and rollout dumps: {"messages" |
  "message_list" | "conversations": [...], "id"/"qid", "answer"/"gt"/"meta": {...}} with images as
  paths (relative to the file's folder) or {"type": "image", "image": path} parts;
- rendered rollout dumps (verl / OpenRLHF style): {"prompt": str, "response": str, "images": [paths],
  "answer"...}, the text in Qwen chat markup (`<|im_start|>role ... <|im_end|>`); turns are split at
  the markup and the images relinked from "images"/"image".

When the picture (or video, or frame files) exists, the assistant turns are re-run through the real
operations (ReplayBackend), so the boxes, crops and observations shown are true; otherwise a
text-only trajectory is built from the turns (no pictures, tool calls parsed for display).
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from core import protocol as P
from core.backends.replay import ReplayBackend
from core.loop import LoopConfig, Task, run_to_end
from core.media import MediaError, Video, load_image
from core.paths import is_sha, media_file, safe_part
from core.recorder import Recorder
from core.scoring import extract_answer, judge_trajectory
from core.sessionlog import SessionLog
from core.trajectory import Media, Step, Trajectory
from core.records import MESSAGE_KEYS, DataError, parse_record

CHAT_TURN = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)(?:<\|im_end\|>|(?=<\|im_start\|>)|\Z)", re.S)
VISION = re.compile(r"<\|vision_start\|>.*?<\|vision_end\|>|<image>|<video>")
ANSWER_KEYS = ("answer", "gt", "ground_truth", "label", "solution")


def is_trajectory(obj) -> bool:
    return isinstance(obj, dict) and "question" in obj and "media" in obj


def is_foreign(obj) -> bool:
    return isinstance(obj, dict) and (any(k in obj for k in MESSAGE_KEYS) or ("prompt" in obj and (
        "response" in obj or "output" in obj)))


def _messages_from_rendered(obj: dict) -> list[dict]:
    text = str(obj.get("prompt", "")) + str(obj.get("response", obj.get("output", "")))
    turns = [(role, body.strip("\n")) for role, body in CHAT_TURN.findall(text)]
    if not turns:
        raise ValueError("no <|im_start|> chat turns in prompt/response")
    images = obj.get("images") or obj.get("image") or []
    images = [images] if isinstance(images, str) else list(images)
    messages, first_user = [], True
    for role, body in turns:
        if role == "user" and first_user:
            first_user = False
            parts = [{"type": "image", "image": images[0]}] if images else []
            messages.append({"role": "user", "content": parts + [{"type": "text", "text": VISION.sub("", body).strip()}]})
        else:
            messages.append({"role": role, "content": VISION.sub("", body)})
    return messages


def _split_question(text: str) -> tuple[str, list[str] | None, str]:
    """(question, choices, guideline) from the first user text."""
    guideline = "vcot"
    for name, suffix in sorted(P.GUIDELINES.items(), key=lambda kv: -len(kv[1])):
        if suffix and text.endswith(suffix):
            text, guideline = text[: -len(suffix)], name
            break
    choices = None
    if "\nchoices:\n" in text:
        text, block = text.split("\nchoices:\n", 1)
        choices = [re.sub(r"^[A-Z]:\s*", "", line).strip() for line in block.splitlines() if line.strip()]
    return text.strip(), choices, guideline


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def _media(content, root: Path):
    """The first user turn's picture: ('image', path) or ('video', path | [frame paths]) or (None, None)."""
    if isinstance(content, str):
        return None, None
    for p in content:
        if p["type"] == "image":
            return "image", p["image"]
        if p["type"] == "video":
            return "video", p["video"]
    return None, None


@dataclass
class MediaAccess:
    """Where an import may read pictures from (core.paths.media_file): the files uploaded with it
    (matched by file name) and folders the operator named. Nothing else is ever opened."""

    roots: list[Path] = field(default_factory=list)
    uploads: list[Path] = field(default_factory=list)

    def find(self, ref) -> Path | None:
        return media_file(ref, self.roots, self.uploads)


def confine(traj: Trajectory, access: MediaAccess) -> Trajectory:
    """An imported trajectory JSON made safe to store: image names that are not content hashes are
    dropped (they would name files), a media path outside what `access` allows is cleared (kept
    as text in meta), and the id becomes a safe name."""
    m = traj.media
    if m.image is not None and not is_sha(m.image.sha):
        m.image = None
    if m.model_view is not None and not is_sha(m.model_view.sha):
        m.model_view = None
    m.overview = [r for r in m.overview if is_sha(r.sha)]
    for step in traj.steps:
        step.images = [r for r in step.images if is_sha(r.sha)]
    if m.path is not None:
        found = access.find(m.path)
        if found is None:
            traj.meta["imported_media_path"] = str(m.path)[:300]
        m.path = str(found) if found else None
    traj.id = safe_part(traj.id, "imported")
    return traj


def foreign_to_trajectory(obj: dict, root: Path, store, where: str = "record",
                          access: MediaAccess | None = None) -> Trajectory:
    """One message-list or rendered record as a Trajectory (re-executed when its media may be read:
    see MediaAccess; by default only files inside the record file's own folder)."""
    access = access or MediaAccess(roots=[root])
    if not any(k in obj for k in MESSAGE_KEYS):
        obj = {**obj, "messages": _messages_from_rendered(obj)}
    try:
        rec = parse_record(obj, root, where)
    except DataError as e:
        raise ValueError(str(e)) from None
    system = next((m for m in rec.messages if m["role"] == "system"), None)
    user = next(m for m in rec.messages if m["role"] == "user")
    turns = [_text(m["content"]) for m in rec.messages if m["role"] == "assistant"]
    question, choices, guideline = _split_question(_text(user["content"]))
    tools = system is None or "<tools>" in _text(system["content"])
    meta = dict(rec.meta) if isinstance(rec.meta, dict) else {}
    truth = next((str(obj[k]) for k in ANSWER_KEYS if obj.get(k) not in (None, "")), None) or \
        (str(meta["answer"]) if meta.get("answer") not in (None, "") else None)
    kind, ref = _media(user["content"], root)
    task = None
    try:
        if kind == "image" and access.find(ref):
            path = access.find(ref)
            task = Task(question=question, image=load_image(path), choices=choices, answer=truth,
                        media_path=str(path))
        elif kind == "video" and isinstance(ref, list) and ref and all(access.find(r) for r in ref):
            task = Task(question=question, video=Video.from_frame_files([access.find(r) for r in ref]),
                        choices=choices, answer=truth)
        elif kind == "video" and isinstance(ref, str) and access.find(ref):
            path = access.find(ref)
            task = Task(question=question, video=Video.from_file(path), choices=choices, answer=truth,
                        media_path=str(path))
    except MediaError:
        task = None
    model = str(obj.get("model") or meta.get("model") or "import")
    if task is not None:
        config = LoopConfig(tools=tools, guideline=guideline if guideline != "notool" else "vcot",
                            max_ops=max(4, len(turns)), max_context_tokens=10 ** 9)
        traj = run_to_end(ReplayBackend(turns), task, config=config, store=store)
        traj.steps = traj.steps[:len(turns)]
    else:
        traj = Trajectory(question=question, choices=choices, ground_truth=truth, tools_enabled=tools,
                          guideline=guideline, media=Media(kind=kind or "image"))
        for i, t in enumerate(turns):
            step = Step(index=i, text=t)
            if P.has_tool_call(t):
                try:
                    call = P.parse_tool_call(t)
                    step.tool, step.arguments = call.name, call.arguments
                except P.ToolCallError as e:
                    step.error = str(e)
            traj.steps.append(step)
        traj.status = "done"
        traj.answer = extract_answer(turns[-1]) if turns else None
        meta["pictures"] = "missing: text only"
        if ref:
            meta["imported_media_path"] = str(ref)[:300]
    traj.backend, traj.model = "import", model
    traj.meta = {**meta, "source_id": rec.id, "imported_from": where}
    traj.id = safe_part(traj.id, "imported")
    if truth is not None and traj.answer is not None:
        judge_trajectory(traj)
    return traj


# ---- files ---------------------------------------------------------------------------------------------

class ImportProblem(ValueError):
    """A file that cannot be imported, with a one-line reason."""


def _parse_json(text: str):
    """The file's records; every failure (syntax, 4,300-digit ints, deep nesting) an ImportProblem."""
    text = text.strip()
    try:
        try:
            data = json.loads(text)
            return data if isinstance(data, list) else [data]
        except json.JSONDecodeError as whole:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            if len(lines) < 2:
                raise ImportProblem(f"not JSON: {whole.msg} (line {whole.lineno} column {whole.colno})") from None
            out = []
            for n, line in enumerate(lines, 1):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ImportProblem(f"line {n} is not JSON: {e.msg} (column {e.colno})") from None
            return out
    except RecursionError:
        raise ImportProblem("the JSON is nested too deeply") from None
    except ImportProblem:
        raise
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise ImportProblem(f"unreadable JSON: {str(e)[:120]}") from None


def trajectories_in(text: str, root: Path | None = None, store=None, access=None,
                    id_prefix: str | None = None) -> list[Trajectory]:
    """Trajectories in a file's text: our trajectory JSON (`python -m core ask --json`), eval items
    ({"trajectory": ...}), message-list records or rendered rollout dumps (above), as one
    object, a JSON list, or JSON lines. Pictures are read only where `access` allows (default: the
    file's own folder). With `id_prefix`, records without an id get `<prefix>-<n>`, so importing the
    same file again replaces them instead of adding copies."""
    access = access or MediaAccess(roots=[root or Path(".")])
    out = []
    for i, it in enumerate(_parse_json(text)):
        if isinstance(it, dict) and is_trajectory(it.get("trajectory")):
            it = it["trajectory"]
        try:
            if is_trajectory(it):
                out.append(confine(Trajectory.from_dict(it), access))
            elif is_foreign(it):
                if store is None:
                    raise ValueError("importing message-list records needs an image store")
                traj = foreign_to_trajectory(it, root or Path("."), store, f"record {i + 1}", access)
                if id_prefix:
                    traj.id = f"{id_prefix}-{i + 1}"
                out.append(traj)
            else:
                raise ImportProblem("not a trajectory: expected `python -m core ask --json` output, a message-list "
                                    "record (messages/message_list/conversations) or a rollout dump (prompt/response)")
        except ImportProblem:
            raise
        except RecursionError:
            raise ImportProblem(f"record {i + 1}: nested too deeply") from None
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, MediaError) as e:
            raise ImportProblem(f"record {i + 1}: {type(e).__name__}: {str(e)[:160]}") from None
    return out


def import_files(log: SessionLog, paths: list[str], media_roots: list[Path] | tuple = ()) -> str:
    """Import each file; bad files are reported (one line each, file name only) and skipped, good
    ones are kept. Pictures come only from the uploaded files themselves (by name), the file's own
    folder, or `media_roots` the operator named. A file imported again replaces its earlier records."""
    uploads = [Path(p) for p in paths or []]
    done, problems = 0, []
    for path in uploads:
        if path.suffix.lower() not in (".json", ".jsonl"):
            continue  # a picture uploaded beside the records
        try:
            raw = path.read_bytes()
            digest = hashlib.sha256(raw).hexdigest()[:16]
            access = MediaAccess(roots=[path.parent, *map(Path, media_roots)], uploads=uploads)
            trajs = trajectories_in(raw.decode("utf-8"), path.parent, log.images, access, id_prefix=digest)
            for traj in trajs:
                Recorder(log, "import").write(traj)
                done += 1
        except UnicodeDecodeError:
            problems.append(f"{path.name}: not UTF-8 text")
        except OSError as e:
            problems.append(f"{path.name}: cannot read or store it ({e.strerror or type(e).__name__})")
        except (ImportProblem, OverflowError, sqlite3.Error) as e:
            problems.append(f"{path.name}: {str(e)[:200]}")
    msg = f"imported {done} trajectories"
    return msg + ("" if not problems else "\n\n⚠️ skipped:\n- " + "\n- ".join(problems))
