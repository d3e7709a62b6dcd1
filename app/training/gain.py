"""Did fine-tuning help? A run's model against the model it started from, on the same held-out items.

    python -m app.training.gain --base assets/pixel-reasoner-tiny --tuned data/runs/<job>/out/final \
        --data data/tinyzoom --data data/exports/<name> --limit 32 --out data/runs/<gain job>

Each `--data` folder's test.jsonl (the TinyZoom test split; an export's held-out items) is run through
`python -m core eval --bench tinyzoom` once per model (greedy, the same settings), into
`<out>/<base|tuned>-<i>/`. `gain.json` holds both models' accuracy with a bootstrap 95% interval and
the paired difference (tuned − base, resampled per item), per folder and over all items; the Train
tab shows it side by side. Nothing here changes which model the app uses: promoting a run is
`python app.py --model <run>/final`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from core.evaluation.report import bootstrap_ci

MODELS = ("base", "tuned")


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


def run(base: str, tuned: str, data: list[str], out: Path, limit: int | None, max_new_tokens: int | None) -> dict:
    from core.cli import main as core_main

    out.mkdir(parents=True, exist_ok=True)
    sets = [d for d in data if (Path(d) / "test.jsonl").exists()]
    if not sets:
        raise SystemExit(f"error: none of {', '.join(data)} has a test.jsonl (held-out items); build TinyZoom "
                         "with the Train tab's 'data' job or `python -m train synth --out data/tinyzoom`")
    total, done = len(sets) * len(MODELS), 0
    _progress(out, done, total)
    result: dict = {"base_model": base, "tuned_model": tuned, "limit": limit, "sets": {}}
    scores: dict[str, dict[str, float]] = {m: {} for m in MODELS}
    for i, d in enumerate(sets):
        per = {}
        for name, model in zip(MODELS, (base, tuned)):
            folder = out / f"{name}-{i}"
            argv = ["eval", "--bench", "tinyzoom", "--data", d, "--split", "test", "--model", model,
                    "--out", str(folder), "--no-db", "--quiet", "--temperature", "0"]
            argv += ["--limit", str(limit)] if limit else []
            argv += ["--max-new-tokens", str(max_new_tokens)] if max_new_tokens else []
            code = core_main(argv)
            if code not in (0, 1):
                raise SystemExit(f"error: evaluating {model} on {d} failed (exit {code})")
            per[name] = read_scores(folder)
            scores[name].update({f"{i}:{k}": v for k, v in per[name].items()})
            done += 1
            _progress(out, done, total)
        result["sets"][d] = compare(per["base"], per["tuned"])
    result["all"] = compare(scores["base"], scores["tuned"])
    (out / "gain.json").write_text(json.dumps(result, indent=2))
    return result


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _ci(ci) -> str:
    return "–" if not ci or ci[0] is None else f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def verdict(result: dict) -> str:
    """What to do with the fine-tuned model, by the paired gain over all items: use it only where it
    is better; where it is worse, say so and keep the start model."""
    gain = result["all"]["gain"]
    mean, ci = gain["mean"], gain["ci95"] or [None, None]
    tuned = result["tuned_model"]
    if mean is None:
        return "No items both models answered: no verdict."
    if mean < 0 or (mean == 0 and not (ci[0] is not None and ci[0] > 0)):
        sure = ci[1] is not None and ci[1] < 0
        return (f"⚠️ **The fine-tuned model is {'worse' if sure else 'not better'}** on these items "
                f"({100 * mean:+.1f} points{', the whole interval below zero' if sure else ''}): keep the start "
                f"model `{result['base_model']}`.")
    if ci[0] is not None and ci[0] > 0:
        return f"The fine-tuned model is better on these items. Use it: `python app.py --model {tuned}`"
    return (f"The fine-tuned model scores {100 * mean:+.1f} points, but the interval includes no gain: try it "
            f"on more held-out items before using it (`python app.py --model {tuned}`).")


def markdown(result: dict) -> str:
    """Both models side by side: accuracy [95% interval] per held-out set and over all items."""
    rows = ["| held-out items | n | start model | fine-tuned | gain (paired) |", "|---|---|---|---|---|"]
    for name, c in [*result["sets"].items(), ("all", result["all"])]:
        g = c["gain"]
        gain = "–" if g["mean"] is None else f"{100 * g['mean']:+.1f} pts {_ci(g['ci95'])}"
        rows.append(f"| `{name}` | {c['n']} | {_pct(c['base']['accuracy'])} {_ci(c['base']['ci95'])} | "
                    f"{_pct(c['tuned']['accuracy'])} {_ci(c['tuned']['ci95'])} | {gain} |")
    return (f"**start model** `{result['base_model']}` vs **fine-tuned** `{result['tuned_model']}` "
            f"(greedy, same items, 95% bootstrap intervals)\n\n" + "\n".join(rows) + "\n\n" + verdict(result))


def is_worse(result: dict | None) -> bool:
    """Whether a gain result shows the fine-tuned model below its start model (mean gain under zero)."""
    mean = ((result or {}).get("all") or {}).get("gain", {}).get("mean")
    return mean is not None and mean < 0


TINY_RECORDS = 20  # fewer training records than this is tiny data
MANY_PASSES = 5  # more passes over the data than this memorises it ...
FEW_RECORDS = 150  # ... when it has fewer records than the recipe measured in docs/corrections.md (50 + 100 mixed)


def training_size_warning(config: str | None, overrides: list[str], records: int | None) -> str | None:
    """A warning for an SFT run that passes over too few records too many times (15 passes over 4
    records made the embedded model 37 points worse on its own items); None when the run looks sane
    or the numbers are unknown. `overrides` are the command's key=value arguments."""
    if records is None or not config or not Path(config).is_file():
        return None
    cfg = json.loads(Path(config).read_text(encoding="utf-8"))
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            cfg[key] = json.loads(value)
        except ValueError:
            cfg[key] = value
    per_step = int(cfg.get("batch_size", 8)) * int(cfg.get("grad_accum", 1))
    steps = int(cfg.get("max_steps", -1))
    passes = steps * per_step / max(records, 1) if steps > 0 else float(cfg.get("epochs", 3.0))
    if records >= TINY_RECORDS and (passes <= MANY_PASSES or records >= FEW_RECORDS):
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
    ap.add_argument("--data", action="append", required=True, help="a folder with test.jsonl (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=None, help="first N items of each folder")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    args = ap.parse_args(argv)
    result = run(args.base, args.tuned, args.data, Path(args.out), args.limit, args.max_new_tokens)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
