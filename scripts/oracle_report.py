"""The oracle report: a model's accuracy with its own first crop against the oracle's, per category.

    python scripts/oracle_report.py --data data/tinyzoom-test --out runs/oracle [--model PATH] [-- EVAL ARGS]

Runs `python -m core eval --bench tinyzoom` twice on the same items (resumable: a rerun finishes what
is missing): as the model chose, into OUT/own, and with `--oracle-first-crop`, into OUT/oracle. Then
pairs the items and writes OUT/report.md: accuracy both ways, and the wrong answers split into
"wrong place" (right once the crop is on the target) and "cannot read" (wrong even there).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.evaluation.report import oracle_markdown, oracle_split  # noqa: E402


def read_items(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "items.jsonl").read_text(encoding="utf-8").splitlines() if line]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a TinyZoom folder (python -m train synth)")
    ap.add_argument("--out", required=True, help="folder for own/, oracle/ and report.md")
    ap.add_argument("--model", help="checkpoint (default: the embedded model)")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    out = Path(args.out)
    base = [sys.executable, "-m", "core", "eval", "--bench", "tinyzoom", "--data", args.data, "--batch",
            str(args.batch), "--no-db", "--quiet", *(["--model", args.model] if args.model else []), *extra]
    for name, flag in (("own", []), ("oracle", ["--oracle-first-crop"])):
        code = subprocess.call([*base, *flag, "--out", str(out / name)], cwd=ROOT, stdout=subprocess.DEVNULL)
        if code:
            return code
    own = json.loads((out / "own" / "report.json").read_text(encoding="utf-8"))
    model = Path(own["model"])
    shown = model.relative_to(ROOT) if model.is_absolute() and model.is_relative_to(ROOT) else own["model"]
    table = oracle_markdown(oracle_split(read_items(out / "own"), read_items(out / "oracle")))
    text = (f"# Own first crop vs the oracle's: {shown}\n\n{own['n']} TinyZoom items from `{args.data}`, "
            f"pixel preset `{own.get('pixel_preset')}`, temperature {own.get('temperature')}\n\n{table}")
    (out / "report.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
