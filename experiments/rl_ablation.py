"""The curiosity ablation table, one command: five rows on TinyZoom, >= 3 seeds per RL row, resumable.

    python experiments/rl_ablation.py --size cpu --out runs/rl_ablation     # 2 CPU cores, under an hour
    python experiments/rl_ablation.py --size gpu --out runs/rl_ablation     # one lent GPU
    python experiments/rl_ablation.py --size smoke --out /tmp/abl --docs /tmp/abl/docs   # CI: every stage, no claims

Rows (Pixel Reasoner's Table 1, lower block): the warm start without RL (the learning trap made on
purpose: the shipped model fine-tuned on a textual-dominated mix); RL with curiosity (the release's
coefficients); RL without curiosity; RL without warm start (from the shipped model itself, before the
trap SFT: it plays the base model's role, since a model before any SFT cannot answer TinyZoom at all
and gives RL no signal); RL without correction data (the warm start SFT on the same mix minus the
self-correction traces). Every RL row: the same steps, group and rollouts; seeds 0..n-1.

Stages (experiments/ablation/plan.py), each run in this process and marked done in <out>/done/ so a
rerun skips it: data (`train synth`), the two warm-start mixes, the two warm-start SFTs, each RL row x
seed (`train rl`, with in-run greedy evals for the accuracy curve), each evaluation (`core eval` on the
test split's zoom-needed, zoom-optional and video items, greedy and sampled at temperature 1 with k
answers). Then docs/rl_ablation.md's generated block (tables with 95% bootstrap intervals and the
paired difference full - without curiosity) and docs/rl_ablation_curves.html/.png.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repo's packages
    sys.path.insert(0, str(ROOT))

from experiments.ablation.plan import SIZES, stages  # noqa: E402
from experiments.ablation.report import generated, rl_metrics, write_curves, write_doc  # noqa: E402
from experiments.ablation.stages import run_stages, stage_seconds  # noqa: E402


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--out", default="runs/rl_ablation", help="the run folder (a rerun resumes it)")
    ap.add_argument("--docs", default="docs", help="where rl_ablation.md and the curves go")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="size overrides, e.g. rl_steps=4")
    ap.add_argument("--rl", nargs="*", default=[], metavar="KEY=VALUE",
                    help="further `train rl` overrides for every RL run, e.g. H=0.6 alpha=1.0")
    ap.add_argument("--rows", default=None, help="only these RL rows, comma-separated (e.g. full,no_curiosity)")
    ap.add_argument("--machine", default=None, help="the machine, as the doc should name it")
    ap.add_argument("--docs-only", action="store_true", help="only rewrite the docs from what is finished")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    size = SIZES[args.size].with_overrides(args.set)
    rows = args.rows.split(",") if args.rows else None
    plan = stages(out, size, args.rl, rows)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not args.docs_only:
        ran = run_stages(out, plan)
        print(f"ran {len(ran)} stages in {time.time() - t0:.0f} s; {len(plan) - len(ran)} were done before", flush=True)
    before = json.loads((out / "info.json").read_text()) if (out / "info.json").exists() else {}
    if args.docs_only and before:  # the docs of the run as it was made: its command, machine, times
        info = before
    else:
        seconds = stage_seconds(out, plan)
        total = sum(seconds.values())
        info = {"command": "python experiments/rl_ablation.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
                "machine": args.machine or machine(), "size": args.size,
                "settings": {**asdict(size), **({"rl": " ".join(args.rl)} if args.rl else {})}, "stages": seconds,
                "wall": f"{total:.0f} s ({total / 60:.1f} min) summed over the {len(seconds)} stages"
                        + ("" if len(seconds) == len(plan) else f" finished of {len(plan)}")}
        (out / "info.json").write_text(json.dumps(info, indent=2))
    docs = Path(args.docs).resolve()
    docs.mkdir(parents=True, exist_ok=True)
    configs = sorted(out.glob("rl/*/seed*/rl_config.json"))  # the runs' own H (--rl H=... changes it)
    H = json.loads(configs[0].read_text()).get("H", 0.3) if configs else 0.3
    curves = write_curves(rl_metrics(out, size), H, docs)
    write_doc(docs / "rl_ablation.md", generated(out, size, info, curves))
    print(f"wrote {docs / 'rl_ablation.md'} and {', '.join(str(p) for p in curves)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
