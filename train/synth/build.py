"""Write a synthetic dataset folder: train/validation/test jsonl, images/, videos/, originals/.

    python -m train synth --out data/tinyzoom [--train 3000] [--validation 100] [--test 330] [--seed 0] [--workers 8]
                          [--closeups 3000]

`--closeups N` adds N training-only "closeup" records after the train split's own (traces.closeup_item).

Each split has its own seed stream (seed, split name, index), so the TinyZoom test split is the
same whatever the train size. Every record carries meta.task: the question, answer, category and
the original media path (full resolution), which is what evaluation runs the model on.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from tqdm import tqdm

from core.media import DiskImageStore, write_video
from core.records import TaskRecord, trajectory_to_sft_record, write_dataset_card
from train.synth.search_traces import search_trace
from train.synth.shifts import SHIFTS, SUITE_SEED, preset, shift_categories
from train.synth.tasks import CATEGORIES, MIX, VIDEO_FPS, make_item
from train.synth.traces import closeup_item, item_task, make_trace, run_trace
from train.synth.varied import make_varied

log = logging.getLogger(__name__)

def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class BuildConfig:
    out: str = _opt("data/tinyzoom", "the dataset folder to write")
    train: int = _opt(3000, "training records (SFT traces)")
    validation: int = _opt(100, "validation records")
    test: int = _opt(330, "test records (the TinyZoom benchmark's split)")
    seed: int = _opt(0, "seed of the item and trace draws (each split has its own stream)")
    correction_rate: float = _opt(0.2, "share of zoom-needed traces whose first crop misses and a second one corrects it")
    notool_rate: float = _opt(0.1, "share of the textual items' traces answered without a tool")
    closeups: int = _opt(0, "training-only close-up reading records appended to the train split")
    workers: int = _opt(1, "processes; the records and files are the same whatever the number")
    progress: bool = _opt(True, "a progress bar per split (stderr)")
    variety: str = _opt("", "\"\" (the original generator), \"train\" (everything users vary), \"control\", "
                            "\"shift:<name>\"")
    variety_share: float = _opt(1.0, "with a variety: the share of items it draws (by seed); the rest are the original's")


def split_seed(seed: int, split: str, index: int) -> int:
    h = hashlib.sha256(f"{seed}:{split}:{index}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def categories_for(n: int) -> list[str]:
    """A deterministic category list with the MIX shares (largest remainder rounding)."""
    counts = {c: int(MIX[c] * n) for c in CATEGORIES}
    rest = sorted(CATEGORIES, key=lambda c: MIX[c] * n - counts[c], reverse=True)
    for c in rest[: n - sum(counts.values())]:
        counts[c] += 1
    return [c for c in CATEGORIES for _ in range(counts[c])]


def draw_item(category: str, seed: int, item_id: str, variety=None):
    """The item of a seed: the original generator's, or with a `Variety` the varied generator's."""
    return make_item(category, seed, item_id) if variety is None else make_varied(category, seed, item_id, variety)


def draw_trace(item, rng: np.random.Generator, correction_rate: float, notool_rate: float):
    """A varied item may get a search trace (two-step zoom, colour fix, not found, object crops);
    every other item draws exactly as the original generator's did."""
    trace = search_trace(item, rng) if item.meta.get("variety") else None
    return trace if trace is not None else make_trace(item, rng, correction_rate, notool_rate)


def build_item(cfg: BuildConfig, split: str, i: int, category: str) -> dict:
    """One record: the item, its media on disk, its scripted trace replayed through the real loop.

    Training items keep no mp4 (videos are traced from their frames, which is all SFT reads);
    validation and test items keep the full-resolution media that evaluation runs on.
    """
    out = Path(cfg.out)
    store = DiskImageStore(out / "images", compress_level=1)  # lossless; encoding was 58% of a record's time
    seed = split_seed(cfg.seed, split, i)
    item_id = f"{split}-{i:05d}-{category}"
    rng = np.random.default_rng(seed + 1)
    variety = preset(cfg.variety) if (seed % 10_000) < cfg.variety_share * 10_000 else None
    if category == "closeup":
        item = draw_item("zoom_needed", seed, item_id, variety)
        item = closeup_item(item if item.target else make_item("zoom_needed", seed, item_id), rng)
    else:
        item = draw_item(category, seed, item_id, variety)
    media_rel, video_path = None, None
    if split != "train":
        if item.frames is not None:
            media_rel = f"videos/{item_id}.mp4"
            video_path = str(write_video(item.frames, out / media_rel, fps=item.meta.get("fps", VIDEO_FPS), qp=18))
        else:
            media_rel = f"originals/{item_id}.png"
            (out / "originals").mkdir(parents=True, exist_ok=True)
            item.image.save(out / media_rel, compress_level=1)
    trace = draw_trace(item, rng, cfg.correction_rate, cfg.notool_rate)
    traj = run_trace(item_task(item, video_path, media_rel), trace, store)
    if traj.answer != item.answer:
        raise RuntimeError(f"{item_id}: scripted answer {traj.answer!r} != ground truth {item.answer!r}")
    rec = trajectory_to_sft_record(traj, store, trace.train_turns, relative_to=out)
    rec["id"] = item_id
    rec["meta"] = {"category": category, "trace": trace.kind, "seed": seed,
                   "task": TaskRecord(item.question, item.answer, category, media_rel,
                                      kind="video" if item.frames is not None else "image",
                                      target=[round(v, 4) for v in item.target] if item.target else None,
                                      visible_frames=item.visible_frames).to_dict(),
                   **{k: v for k, v in item.meta.items()
                      if k in KEPT_META or (item.meta.get("variety") and k in VARIETY_META)}}
    return rec


KEPT_META = ("kind", "tag_box", "glyph_box")
VARIETY_META = ("background", "canvas", "font", "jpeg", "distractors", "absent",
                "boxes", "n_frames", "fps", "source_frames")
"""Item meta kept in a record; the varied generator's items keep more (for the trace kinds and the report)."""


def _build_item(args: tuple) -> dict:
    return build_item(*args)


CHUNK = 256
"""Records per part file: a killed build resumes at its first missing part."""


def build_split(cfg: BuildConfig, split: str, n: int, categories: list[str] | None = None) -> list[dict]:
    """The split's records, written part by part under `<out>/.parts/` as they are made, so a rerun of
    a killed build keeps every finished part (records depend only on the config, split and index)."""
    categories = categories or categories_for(n) + (["closeup"] * cfg.closeups if split == "train" else [])
    jobs = [(cfg, split, i, category) for i, category in enumerate(categories)]
    made_by = json.dumps([{k: v for k, v in vars(cfg).items() if k not in ("workers", "progress")}, categories])
    parts = Path(cfg.out) / ".parts" / f"{split}-{hashlib.sha256(made_by.encode()).hexdigest()[:12]}"
    parts.mkdir(parents=True, exist_ok=True)
    bar = tqdm(desc=split, total=len(jobs), unit="record", disable=not cfg.progress or not jobs)
    records = []
    for start in range(0, len(jobs), CHUNK):
        part = parts / f"{start // CHUNK:05d}.jsonl"
        if not part.exists():
            chunk = _make_records(cfg, jobs[start:start + CHUNK])
            tmp = part.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk), encoding="utf-8")
            tmp.replace(part)
        records += [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines()]
        bar.update(min(CHUNK, len(jobs) - start))
    bar.close()
    shutil.rmtree(parts)
    return records


def _make_records(cfg: BuildConfig, jobs: list[tuple]) -> list[dict]:
    if cfg.workers <= 1 or len(jobs) < 2 * cfg.workers:
        return [build_item(*job) for job in jobs]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(cfg.workers) as pool:  # records come back in order
        return pool.map(_build_item, jobs, chunksize=4)


def built_with(folder: Path, **expected) -> dict | None:
    """The folder's dataset.json (written last) when it has every expected value: the build is done."""
    path = folder / "dataset.json"
    if not path.exists():
        return None
    made = json.loads(path.read_text(encoding="utf-8"))
    return made if all(made.get(k) == v for k, v in expected.items()) else None


def build(cfg: BuildConfig) -> dict[str, int]:
    """Write the dataset; a folder already built with the same config is left as it is (a rerun of a
    recipe skips it), and a killed build resumes from its finished parts (build_split)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    done = built_with(out, config={k: v for k, v in vars(cfg).items() if k not in ("workers", "progress")})
    if done:
        log.info("%s: already built with this config", out)
        return done["sizes"]
    sizes = {}
    for split, n in (("test", cfg.test), ("validation", cfg.validation), ("train", cfg.train)):
        t0 = time.perf_counter()
        records = build_split(cfg, split, n)
        tmp = out / f"{split}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        tmp.replace(out / f"{split}.jsonl")
        sizes[split] = len(records)
        log.info("%s: %d records in %.1f s", split, len(records), time.perf_counter() - t0)
    config = {k: v for k, v in vars(cfg).items() if k not in ("workers", "progress")}
    (out / "dataset.json").write_text(json.dumps({"config": config, "sizes": sizes, "mix": MIX}, indent=2))
    if any(sizes.values()):
        write_dataset_card(out, {s: f"{s}.jsonl" for s in ("train", "validation", "test") if sizes[s]},
                           "TinyZoom (synthetic)", "Synthetic pixel-reasoning traces written by `python -m train synth` "
                           f"(seed {cfg.seed}): {', '.join(f'{n} {s}' for s, n in sizes.items())} records.")
    return sizes


def build_suite(out: str | Path, per_shift: int = 60, names: list[str] | None = None, workers: int = 1,
                seed: int = SUITE_SEED, categories: list[str] | None = None) -> dict[str, int]:
    """Write one test split per shift under `out`; returns the items written per shift. `categories`
    draws only those (e.g. zoom_needed: a failure family for experiments/corrections_teach.py)."""
    out = Path(out)
    sizes = {}
    for name in names or SHIFTS:
        shift = SHIFTS[name]
        if categories:
            shift = replace(shift, categories=tuple(categories))
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if built_with(folder, shift=name, seed=seed, sizes={"test": per_shift}, categories=list(shift.categories)):
            sizes[name] = per_shift
            continue
        cfg = BuildConfig(out=str(folder), train=0, validation=0, test=per_shift, seed=seed, workers=workers,
                          variety=f"shift:{name}", correction_rate=0.0, notool_rate=0.0)
        records = build_split(cfg, f"shift-{name}", per_shift, shift_categories(shift, per_shift))
        tmp = folder / "test.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        tmp.replace(folder / "test.jsonl")
        variety = asdict(shift.variety)
        (folder / "dataset.json").write_text(json.dumps({"shift": name, "note": shift.note, "seed": seed,
                                                         "categories": list(shift.categories), "variety": variety,
                                                         "sizes": {"test": len(records)}}, indent=2))
        sizes[name] = len(records)
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train synth", description="Write the synthetic TinyZoom dataset.")
    for f in fields(BuildConfig):
        if f.name == "progress":
            continue
        if f.name == "variety":  # a bare --variety means the training preset
            ap.add_argument("--variety", nargs="?", const="train", default="",
                            help="randomise what users vary: train (bare flag), control, shift:<name>")
            continue
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                        help=f"{f.metadata['help']} (default: {f.default})")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    ap.add_argument("--examples", default=None, help="also write the app's example gallery to this folder")
    ap.add_argument("--shift-suite", default=None, help="write the robustness shift suite (one TinyZoom folder per "
                    "shift) to this folder instead of a dataset")
    ap.add_argument("--per-shift", type=int, default=60, help="items per shift of --shift-suite")
    ap.add_argument("--shifts", default=None, help="--shift-suite: comma-separated shift names (default: all)")
    ap.add_argument("--categories", default=None, help="--shift-suite: draw only these comma-separated categories")
    args = ap.parse_args(argv)
    try:
        preset(args.variety)
    except ValueError as e:
        ap.error(str(e))
    suite, per_shift = vars(args).pop("shift_suite"), vars(args).pop("per_shift")
    names, categories = (_names(vars(args).pop(k)) for k in ("shifts", "categories"))
    unknown = [n for n in names or [] if n not in SHIFTS] + [c for c in categories or [] if c not in CATEGORIES]
    if unknown:
        ap.error(f"unknown shift or category: {', '.join(unknown)} (shifts: {', '.join(SHIFTS)}; "
                 f"categories: {', '.join(CATEGORIES)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    examples = vars(args).pop("examples")
    if suite:
        sizes = build_suite(suite, per_shift, names, workers=args.workers, categories=categories)
        print(json.dumps({"out": suite, "sizes": sizes}))
        return 0
    if examples:
        print(json.dumps({"examples": len(write_examples(examples))}))
        if args.train == args.validation == args.test == 0:
            return 0
    sizes = build(BuildConfig(**vars(args)))
    print(json.dumps({"out": args.out, "sizes": sizes}))
    return 0


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


# captions short enough for the gallery's narrow thumbnails, each one different
EXAMPLES = (("zoom_needed", 101, "tag 1"), ("zoom_needed", 102, "tag 2"), ("zoom_optional", 103, "colour"),
            ("counting", 104, "count"), ("video", 105, "video"))


def write_examples(out: str | Path = "assets/examples", seed: int = 12345) -> list[dict]:
    """A few items for the app's example gallery (assets/examples/examples.json), outside every split."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for category, index, label in EXAMPLES:
        item = make_item(category, split_seed(seed, "examples", index), f"example-{index}")
        if item.frames is not None:
            name = f"{category}_{index}.mp4"
            write_video(item.frames, out / name, fps=VIDEO_FPS, qp=18)
        else:
            name = f"{category}_{index}.png"
            item.image.save(out / name, optimize=True)
        entries.append({"media": name, "question": item.question, "answer": item.answer, "category": category,
                        "label": label})
    (out / "examples.json").write_text(json.dumps(entries, indent=2) + "\n")
    return entries
