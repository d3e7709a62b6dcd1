"""Did fine-tuning help? A run's model against the model it started from, on the same items, in three parts.

    python -m app.training.gain --base assets/pixel-reasoner-tiny --tuned data/runs/<job>/out/final \
        --export data/exports/<name> --own data/tinyzoom --limit 32 --out data/runs/<gain job>

The parts (app/training/gain_sets.py): the export's corrected questions asked again (*trained on*),
items like them never trained on (*held out*: the export's test.jsonl and the other items of the
folders its sessions came from), and the model's own TinyZoom test split (*own split*: is anything
forgotten?). An own folder that does not exist yet is built first (`python -m train synth`, the
Train tab's data job). `--data DIR` adds a folder's test.jsonl as a part of its own.

Each part runs through `python -m core eval --bench tinyzoom` once per model (greedy, the same
settings), into `<out>/<base|tuned>-<i>/`. `gain.json` holds both models' accuracy with a bootstrap
95% interval and the paired difference (tuned − base, resampled per item) per part; the Train tab
shows them side by side. Nothing here changes which model the app uses: promoting a run is
`python app.py --model <run>/final`.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from app.training import gain_sets as S
from core.evaluation.report import bootstrap_ci

log = logging.getLogger(__name__)
MODELS = ("base", "tuned")
CAPTIONS = {S.TRAINED: "the corrected questions asked again", S.HELD_OUT: "like them, never trained on",
            S.OWN: "the model's own items: is anything forgotten?"}


def read_scores(folder: Path) -> dict[str, float]:
    """item id -> score (mean over samples) from an eval run folder's items.jsonl."""
    scores: dict[str, list[float]] = {}
    path = folder / "items.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        if line.strip():
            rec = json.loads(line)
            scores.setdefault(str(rec["id"]), []).append(float(rec["score"]))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def paired_ci(diffs: list[float], n_boot: int = 2000) -> list[float | None]:
    return bootstrap_ci(diffs, n_boot=n_boot, seed=1)


def compare(base: dict[str, float], tuned: dict[str, float]) -> dict:
    """Accuracy of both models and their paired difference over the items both answered."""
    ids = sorted(set(base) & set(tuned))
    b, t = [base[i] for i in ids], [tuned[i] for i in ids]
    diff = [y - x for x, y in zip(b, t)]
    mean = (lambda v: round(float(np.mean(v)), 4) if v else None)
    return {"n": len(ids), "base": {"accuracy": mean(b), "ci95": bootstrap_ci(b)},
            "tuned": {"accuracy": mean(t), "ci95": bootstrap_ci(t)},
            "gain": {"mean": mean(diff), "ci95": paired_ci(diff)}}


def _progress(out: Path, done: int, total: int) -> None:
    (out / "progress.json").write_text(json.dumps({"done": done, "total": total}))


def build_own(own: Path) -> bool:
    """Build the own TinyZoom folder when it does not exist yet (the Train tab's data job, as a
    subprocess); False when it exists without a test split (never written into)."""
    from app.training.jobs import synth_command

    if (own / "test.jsonl").is_file():
        return True
    if own.exists() and any(own.iterdir()):
        log.warning("%s has no test.jsonl: no own split to compare on", own)
        return False
    cmd = synth_command(str(own), str(own)) + ["--no-progress"]
    log.info("the own split %s is not built yet: building it (%s)", own, " ".join(cmd[1:]))
    if subprocess.run(cmd, stdout=sys.stderr).returncode != 0:
        raise SystemExit(f"error: building {own} failed (python {' '.join(cmd[1:])})")
    return True


def evaluate(model: str, part: S.Part, folder: Path, limit: int | None, max_new_tokens: int | None) -> dict:
    """item id -> score of one model on one part (`python -m core eval`, resumes in `folder`)."""
    from core.cli import main as core_main

    argv = ["eval", "--bench", "tinyzoom", "--data", part.folder, "--split", "test", "--model", model,
            "--out", str(folder), "--no-db", "--quiet", "--temperature", "0"]
    argv += ["--limit", str(limit)] if limit else []
    argv += ["--max-new-tokens", str(max_new_tokens)] if max_new_tokens else []
    code = core_main(argv)
    if code not in (0, 1):
        raise SystemExit(f"error: evaluating {model} on {part.label} ({part.folder}) failed (exit {code})")
    return read_scores(folder)


def plan(out: Path, export: str | None, own: str | None, data: list[str]) -> list[S.Part]:
    """The parts to score: the export's three (own built first when missing) and each --data folder."""
    own_dir = Path(own) if own and build_own(Path(own)) else None
    parts = S.export_parts(Path(export) if export else None, own_dir, out / "items")
    parts += [S.Part(Path(d).name, d) for d in data if (Path(d) / "test.jsonl").is_file()]
    if not parts:
        raise SystemExit("error: no items to compare on: give --export (a run's annotation export), --own (the "
                         "model's TinyZoom folder, built when missing) or --data (a folder with a test.jsonl)")
    return parts


def run(base: str, tuned: str, out: Path, export: str | None = None, own: str | None = None, data: list[str] = (),
        limit: int | None = None, max_new_tokens: int | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    _progress(out, 0, 1)
    parts = plan(out, export, own, list(data))
    total, done = len(parts) * len(MODELS), 0
    result: dict = {"base_model": base, "tuned_model": tuned, "limit": limit, "sets": {}}
    for i, part in enumerate(parts):
        _progress(out, done, total)
        per = {}
        for name, model in zip(MODELS, (base, tuned)):
            per[name] = evaluate(model, part, out / f"{name}-{i}", limit, max_new_tokens)
            done += 1
            _progress(out, done, total)
        result["sets"][part.label] = {**compare(per["base"], per["tuned"]), "folder": part.folder}
    (out / "gain.json").write_text(json.dumps(result, indent=2))
    return result


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _ci(ci) -> str:
    return "–" if not ci or ci[0] is None else f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def headline(result: dict) -> tuple[str, dict] | None:
    """(label, comparison) the verdict rests on: the held-out part, else another part never trained
    on (a --data folder, then the own split); None when only trained-on items were scored."""
    sets = {k: v for k, v in result["sets"].items() if v["n"] and k != S.TRAINED}
    order = sorted(sets, key=lambda k: (k != S.HELD_OUT, k == S.OWN))
    return (order[0], sets[order[0]]) if order else None


def forgot(result: dict) -> str:
    """A warning when the own split is worse with the whole interval below zero ("" otherwise)."""
    own = result["sets"].get(S.OWN)
    hi = ((own or {}).get("gain", {}).get("ci95") or [None, None])[1]
    if own is None or hi is None or hi >= 0:
        return ""
    return (f"\n\n⚠️ **It forgot some of what it could do**: {100 * own['gain']['mean']:+.1f} points on its own split "
            f"({own['n']} items, the whole interval below zero). Mix more of its original data into the fine-tune "
            "(`mix_records=`) or train fewer epochs.")


def verdict(result: dict) -> str:
    """What to do with the fine-tuned model, by the paired gain on items it never trained on: use it
    only where it is better; where it is worse, say so and keep the start model."""
    top, tuned = headline(result), result["tuned_model"]
    if top is None or top[1]["gain"]["mean"] is None:
        return "No items never trained on that both models answered: no verdict."
    label, c = top
    where = {S.HELD_OUT: "held-out items like the corrected ones", S.OWN: "its own split"}.get(label, f"`{label}`")
    mean, ci = c["gain"]["mean"], c["gain"]["ci95"] or [None, None]
    if mean < 0 or (mean == 0 and not (ci[0] is not None and ci[0] > 0)):
        sure = ci[1] is not None and ci[1] < 0
        return (f"⚠️ **The fine-tuned model is {'worse' if sure else 'not better'}** on {where} "
                f"({100 * mean:+.1f} points{', the whole interval below zero' if sure else ''}): keep the start "
                f"model `{result['base_model']}`.") + forgot(result)
    if ci[0] is not None and ci[0] > 0:
        return f"The fine-tuned model is better on {where}. Use it: `python app.py --model {tuned}`" + forgot(result)
    return (f"The fine-tuned model scores {100 * mean:+.1f} points on {where}, but the interval includes no gain: "
            f"try it on more held-out items before using it (`python app.py --model {tuned}`).") + forgot(result)


def markdown(result: dict) -> str:
    """The parts side by side: accuracy [95% interval] of both models and the paired gain."""
    rows = ["| items | n | start model | fine-tuned | gain (paired) |", "|---|---|---|---|---|"]
    for name, c in result["sets"].items():
        g = c["gain"]
        gain = "–" if g["mean"] is None else f"{100 * g['mean']:+.1f} pts {_ci(g['ci95'])}"
        label = f"**{name}**: {CAPTIONS[name]}" if name in CAPTIONS else f"`{name}`"
        rows.append(f"| {label} | {c['n']} | {_pct(c['base']['accuracy'])} {_ci(c['base']['ci95'])} | "
                    f"{_pct(c['tuned']['accuracy'])} {_ci(c['tuned']['ci95'])} | {gain} |")
    return (f"**start model** `{result['base_model']}` vs **fine-tuned** `{result['tuned_model']}` "
            f"(greedy, same items, 95% bootstrap intervals)\n\n" + "\n".join(rows) + "\n\n" + verdict(result))


def is_worse(result: dict | None) -> float | None:
    """The gain (under zero) where a gain result shows the fine-tuned model below its start model on
    items it never trained on; None otherwise."""
    top = headline(result) if result else None
    mean = top[1]["gain"]["mean"] if top else None
    return mean if mean is not None and mean < 0 else None


TINY_RECORDS = 20  # fewer training records than this is tiny data
MANY_PASSES = 5  # more passes over the data than this memorises it ...
FEW_RECORDS = 450  # ... when it has fewer records than the recipe measured in docs/corrections.md (50 + 400 mixed)


def training_size_warning(cfg: dict, records: int | None, mixed: int = 0) -> str | None:
    """A warning for an SFT run (`cfg`: its config's fields with the command's overrides) that passes
    over too few records too many times (15 passes over 4 records made the embedded model 37 points
    worse on its own items); None when the run looks sane or the numbers are unknown. `mixed`: the
    records of the model's original data mixed in (they count against forgetting, not toward teaching)."""
    if records is None:
        return None
    per_step = int(cfg.get("batch_size", 8)) * int(cfg.get("grad_accum", 1))
    steps = int(cfg.get("max_steps", -1))
    passes = steps * per_step / max(records + mixed, 1) if steps > 0 else float(cfg.get("epochs", 3.0))
    if records >= TINY_RECORDS and (passes <= MANY_PASSES or records + mixed >= FEW_RECORDS):
        return None
    return (f"⚠️ {records} training record{'s' if records != 1 else ''}, about {passes:.0f} passes over them: a "
            f"model this small learns them by heart and often gets worse elsewhere. Annotate more (at least "
            f"{TINY_RECORDS}) or lower max_steps, and press 'Evaluate against its start model' before using it.")


def count_records(dataset: str | None) -> int | None:
    """Training records in a dataset folder's train.jsonl, or in a .jsonl file (None where there is none)."""
    path = Path(dataset or "")
    path = path if path.suffix == ".jsonl" else path / "train.jsonl"
    if not dataset or not path.is_file():
        return None
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.training.gain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the model the run started from")
    ap.add_argument("--tuned", required=True, help="the run's final model folder")
    ap.add_argument("--export", default=None, help="the run's training data (an annotation export): its train.jsonl "
                    "is asked again (trained on), its test.jsonl and items like them are the held-out part")
    ap.add_argument("--own", default=None, help="the model's own TinyZoom folder (its test.jsonl is the own split; "
                    "built when it does not exist)")
    ap.add_argument("--data", action="append", default=[], help="another folder with a test.jsonl (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=None, help="first N items of each part")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(args.base, args.tuned, Path(args.out), args.export, args.own, args.data, args.limit,
                 args.max_new_tokens)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
