"""Do corrections teach? The Studio's loop on one failure family of a model, measured.

    python experiments/corrections_teach.py --family DIR --n 50 --out OUT [--model M] [--minutes 10]

`DIR` is a TinyZoom-format folder (`test.jsonl` whose records carry `meta.task` with `target`) holding
items of one failure family (`python -m train synth --shift-suite data/families --shifts tag_corner
--categories zoom_needed --per-shift 300`). The script, with the Studio's own code at each step:

1. runs the model on every item (`python -m core eval`, greedy) into a session log, `OUT/studio.db`;
2. splits the items: the first ones are the correction pool, the last `--heldout` are held out
   (never corrected, never trained on);
3. annotates the first `--n` wrong trajectories of the pool through `app/annotate/labeling.py: save`, the
   Annotate tab's own records, as an annotator would: a *wrong box* with the corrected box drawn
   around `meta.task.target` on each crop step that missed it, and the right answer;
4. exports them with the Studio's exporter (`app/annotate/export.py`) and fine-tunes with the Studio's
   corrections config (`configs/sft_corrections.json`, `python -m train sft`) for at most
   `--minutes`, with records of the model's original training data mixed in by the config's mix knob
   (`mix_data` = `--own`, `mix_records` = `--mix`);
5. evaluates the fine-tuned model on the held-out items and both models on the model's own TinyZoom
   test split (`--own`), paired per item as the Train tab's gain view does (`app/training/gain.py: compare`);
6. writes `OUT/report.json` and prints as its last line
   `corrections teach: gain +G points [lo, hi] on N held-out, own split A -> B, fine-tune S s`.

Every eval folder resumes when rerun with the same OUT, so a rerun only redoes what is missing.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository's packages

from app.annotate import export as E  # noqa: E402
from app.annotate import labeling as L  # noqa: E402
from app.training.gain import compare, read_scores  # noqa: E402
from app.shared.studio_log import StudioLog  # noqa: E402
from core import protocol as P  # noqa: E402
from core.cli import main as core_main  # noqa: E402

logger = logging.getLogger("corrections_teach")
ANNOTATOR = "corrections_teach"


@dataclass
class TeachConfig:
    family: str = field(metadata={"help": "TinyZoom-format folder of one failure family (test.jsonl with meta.task.target)"})
    out: str = field(metadata={"help": "run folder: studio.db, eval folders, export, fine-tune, report.json"})
    n: int = field(default=50, metadata={"help": "wrong pool trajectories to correct"})
    model: str = field(default="assets/pixel-reasoner-tiny", metadata={"help": "the start model"})
    minutes: float = field(default=10.0, metadata={"help": "fine-tune wall-clock budget (CPU)"})
    heldout: int | None = field(default=None, metadata={
        "help": "held-out items, the family's last ones (default: half the family, at least 100 when it has 150+)"})
    own: str = field(default="data/tinyzoom", metadata={
        "help": "the model's own TinyZoom folder: test.jsonl is the own split, train.jsonl the --mix source"})
    own_limit: int | None = field(default=None, metadata={"help": "first N items of the own split (smoke runs)"})
    mix: int | None = field(default=None, metadata={
        "help": "records of the own folder's train.jsonl (the model's original data) mixed into the fine-tune, "
                "drawn with the run's seed (default: the config's mix_records)"})
    config: str = field(default=E.CORRECTIONS_CONFIG, metadata={"help": "the SFT config fine-tuned with"})
    overrides: list[str] = field(default_factory=list, metadata={"help": "extra key=value for python -m train sft"})
    batch: int = field(default=32, metadata={"help": "conversations evaluated together"})


def parse_args(argv: list[str] | None) -> TeachConfig:
    ap = argparse.ArgumentParser(prog="python experiments/corrections_teach.py", description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(TeachConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if f.name == "overrides":
            ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help=f.metadata["help"])
            continue
        kind = {"float": float, "int": int}.get(str(f.type).split(" ")[0], str)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ap.add_argument(flag, type=kind, required=required, help=f.metadata["help"],
                        **({} if required else {"default": f.default}))
    return TeachConfig(**vars(ap.parse_args(argv)))


# ---- the family and its split ------------------------------------------------------------------

def family_items(folder: Path) -> list[dict]:
    """id, answer, target and the record of every item; ValueError names what a folder lacks."""
    path = folder / "test.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (a family is a TinyZoom folder: python -m train synth "
                         "--shift-suite data/families --shifts tag_corner --categories zoom_needed)")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            rec = json.loads(line)
            task = (rec.get("meta") or {}).get("task") or {}
            if not task.get("target"):
                raise ValueError(f"{path}:{lineno}: meta.task has no target box (zoom-needed items have one)")
            items.append({"id": str(rec["id"]), "answer": str(task["answer"]), "target": task["target"], "record": rec})
    return items


def heldout_size(n_items: int, asked: int | None) -> int:
    if asked is not None:
        if not 0 < asked < n_items:
            raise ValueError(f"--heldout must be between 1 and {n_items - 1} for {n_items} items")
        return asked
    return max(n_items // 2, min(100, n_items - 50)) if n_items >= 150 else n_items // 2


def write_subset(items: list[dict], family: Path, out: Path) -> Path:
    """A TinyZoom folder holding these items (media paths made absolute): what core eval reads."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "test.jsonl").open("w", encoding="utf-8") as f:
        for it in items:
            rec = json.loads(json.dumps(it["record"]))
            rec["meta"]["task"]["media"] = str((family / rec["meta"]["task"]["media"]).resolve())
            f.write(json.dumps(rec) + "\n")
    return out


# ---- running models -----------------------------------------------------------------------------

def evaluate(model: str, data: Path, folder: Path, batch: int, db: Path | None = None,
             limit: int | None = None) -> dict[str, float]:
    """item id -> score, greedy, through `python -m core eval` (resumes in `folder`)."""
    argv = ["eval", "--bench", "tinyzoom", "--data", str(data), "--split", "test", "--model", model,
            "--out", str(folder), "--quiet", "--temperature", "0", "--batch", str(batch)]
    argv += ["--db", str(db)] if db else ["--no-db"]
    argv += ["--limit", str(limit)] if limit else []
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its report is in the folder
        code = core_main(argv)
    if code not in (0, 1):
        raise RuntimeError(f"evaluating {model} on {data} failed (exit {code})")
    scores = read_scores(folder)
    logger.info("%s on %s: %.1f%% of %d in %.0f s", model, data, 100 * sum(scores.values()) / max(len(scores), 1),
                len(scores), time.perf_counter() - t0)
    return scores


def sessions_by_item(log: StudioLog) -> dict[str, str]:
    """item id -> session id of the eval runs logged in `log`."""
    out = {}
    for row in log.db.query("SELECT id, meta_json FROM sessions ORDER BY created_at"):
        item = json.loads(row["meta_json"] or "{}").get("item_id")
        if item is not None:
            out.setdefault(str(item), row["id"])
    return out


# ---- annotating as an annotator would -----------------------------------------------------------

def covers(box_px: list[float], target: list[float], size: tuple[int, int], share: float = 0.9) -> bool:
    """Whether a crop box (original pixels) holds at least `share` of the target box (normalized)."""
    w, h = size
    tx0, ty0, tx1, ty1 = target[0] * w, target[1] * h, target[2] * w, target[3] * h
    ix = max(0.0, min(box_px[2], tx1) - max(box_px[0], tx0))
    iy = max(0.0, min(box_px[3], ty1) - max(box_px[1], ty0))
    return ix * iy >= share * (tx1 - tx0) * (ty1 - ty0)


def annotate(log: StudioLog, session_id: str, target: list[float], answer: str) -> list[int]:
    """The Annotate tab's records for one wrong trajectory, as an annotator would: the first crop that
    missed the target gets *wrong box* with the corrected box drawn around the target (the export then
    trains that step's corrected call, its real observation and the answer); a trajectory without a crop
    gets a corrected first step that zooms on the target; the whole trajectory gets *wrong answer* with
    the right answer."""
    traj = log.get_trajectory(session_id)
    choices, box = L.target_choices(traj), [round(float(v), 4) for v in target]
    size = (traj.media.image.width, traj.media.image.height) if traj.media.image else None
    crops = [s for s in traj.steps if s.tool in P.CROP_ALIASES and not s.error and s.source_box_px]
    missed = [s for s in crops if size and not covers(s.source_box_px, target, size)]
    saved = []
    if missed:
        saved.append(L.save(log, session_id, choices[missed[0].index + 1], "wrong box", "misses the tag", "",
                            box, None, "", ANNOTATOR))
    if not crops and traj.media.kind == "image":
        zoom = "Let me zoom in on it.\n\n" + P.format_tool_call(P.CROP_TOOL, {"bbox_2d": box, "target_image": 1})
        saved.append(L.save(log, session_id, choices[1], "other", "should have zoomed", "", None, None, zoom,
                            ANNOTATOR))
    saved.append(L.save(log, session_id, L.WHOLE, "wrong answer", "", answer, None, None, "", ANNOTATOR))
    return saved


# ---- export, mix, fine-tune ---------------------------------------------------------------------

def finetune(cfg: TeachConfig, data: Path, run: Path) -> tuple[Path, float, int]:
    """`python -m train sft` with the corrections config, as the Train tab launches it, the own folder's
    training records mixed in by its mix knob (mix_data, mix_records); (final model, seconds, records mixed)."""
    final = run / "final"
    budget = cfg.minutes * 60 - min(120.0, cfg.minutes * 12)  # loading and saving take the rest
    mix = [f"mix_data={cfg.own}"] + ([f"mix_records={cfg.mix}"] if cfg.mix is not None else [])
    cmd = [sys.executable, "-m", "train", "sft", "--config", cfg.config, f"data={data}", f"out={run}",
           f"model={cfg.model}", f"max_seconds={budget:.0f}", *mix, *cfg.overrides]
    logger.info("fine-tune: %s", " ".join(cmd))
    t0 = time.perf_counter()
    with (run.parent / "finetune.log").open("w") as log_file:
        code = subprocess.run(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    if code != 0 or not (final / "config.json").exists():
        raise RuntimeError(f"fine-tune failed (exit {code}); see {run.parent / 'finetune.log'}")
    return final, seconds, json.loads((run / "summary.json").read_text())["mixed_records"]


# ---- the run ------------------------------------------------------------------------------------

def correct(cfg: TeachConfig, log: StudioLog, pool: list[dict], scores: dict[str, float]) -> list[str]:
    """Annotate the first --n wrong pool trajectories (sessions already annotated are kept as they are)."""
    by_item, done = sessions_by_item(log), {a["session_id"] for a in log.list_annotations()}
    wrong = [it for it in pool if scores.get(it["id"], 1.0) < 1.0 and it["id"] in by_item][:cfg.n]
    for it in wrong:
        sid = by_item[it["id"]]
        if sid not in done:
            annotate(log, sid, it["target"], it["answer"])
    return [by_item[it["id"]] for it in wrong]


def run(cfg: TeachConfig) -> dict:
    out, family, own = Path(cfg.out), Path(cfg.family), Path(cfg.own)
    items = family_items(family)
    held_n = heldout_size(len(items), cfg.heldout)
    if not (own / "test.jsonl").is_file():
        raise ValueError(f"{own}/test.jsonl: no own split (python -m train synth --out {own} --train 400 "
                         "--validation 0 --test 330 --seed 0)")
    if cfg.mix != 0 and not (own / "train.jsonl").is_file():
        raise ValueError(f"{own}/train.jsonl is missing: nothing to mix in (--mix 0 mixes nothing)")
    out.mkdir(parents=True, exist_ok=True)
    pool, held = items[:-held_n], items[-held_n:]
    log = StudioLog(out / "studio.db")
    start = evaluate(cfg.model, family, out / "eval-start-family", cfg.batch, db=out / "studio.db")
    sessions = correct(cfg, log, pool, start)
    if not sessions:
        raise ValueError(f"no wrong trajectory in the pool of {len(pool)} items: nothing to correct")
    shutil.rmtree(out / "export", ignore_errors=True)
    report = E.export_annotated(log, out / "export", sessions, hold_out_every=0, progress=False)
    shutil.rmtree(out / "finetune", ignore_errors=True)
    tuned, seconds, mixed = finetune(cfg, out / "export", out / "finetune")
    after = evaluate(str(tuned), write_subset(held, family, out / "heldout"), out / "eval-tuned-heldout", cfg.batch)
    own_start = evaluate(cfg.model, own, out / "eval-start-own", cfg.batch, limit=cfg.own_limit)
    own_tuned = evaluate(str(tuned), own, out / "eval-tuned-own", cfg.batch, limit=cfg.own_limit)
    gain = compare({it["id"]: start[it["id"]] for it in held if it["id"] in start}, after)
    own_gain = compare(own_start, own_tuned)
    pct = (lambda v: None if v is None else round(100 * v, 1))
    return {"family": str(family), "model": cfg.model, "tuned_model": str(tuned), "n_corrections": report.records,
            "annotated": len(sessions), "skipped": report.skipped, "mixed_in": mixed, "heldout_n": gain["n"],
            "before": pct(gain["base"]["accuracy"]), "after": pct(gain["tuned"]["accuracy"]),
            "gain": pct(gain["gain"]["mean"]), "gain_ci95": [pct(v) for v in gain["gain"]["ci95"]],
            "own_n": own_gain["n"], "own_before": pct(own_gain["base"]["accuracy"]),
            "own_after": pct(own_gain["tuned"]["accuracy"]), "own_gain_ci95": [pct(v) for v in own_gain["gain"]["ci95"]],
            "finetune_seconds": round(seconds, 1), "config": cfg.config, "overrides": cfg.overrides,
            "pool_n": len(pool), "start_pool_accuracy": pct(sum(start.get(i["id"], 0) for i in pool) / max(len(pool), 1))}


def summary(r: dict) -> str:
    lo, hi = r["gain_ci95"]
    return (f"corrections teach: gain {r['gain']:+.1f} points [{lo:.1f}, {hi:.1f}] on {r['heldout_n']} held-out, "
            f"own split {r['own_before']:.1f} -> {r['own_after']:.1f}, fine-tune {r['finetune_seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = parse_args(argv)
    try:
        result = run(cfg)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (Path(cfg.out) / "report.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "skipped"}))
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
