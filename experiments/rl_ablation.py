"""The curiosity ablation, measured: RL with and without the curiosity term from one warm start.

    python -m experiments.rl_ablation --out runs/rl_ablation --budget 540    # the real run: one GPU + 16 cores, 9 min
    python -m experiments.rl_ablation --out runs/rl_ablation                 # all 200 RL steps, no budget (~15 min)
    python -m experiments.rl_ablation --out /tmp/rl_ablation --size smoke    # every stage, a few steps (CPU, ~4 min)
    python -m experiments.rl_ablation --out runs/rl_ablation --docs-only     # the docs again from a finished run

With `--budget`, the RL arms get what the data and warm start left of it (`train rl max_seconds`):
each stops after its last step that fits, evaluating there; the goal check compares the arms at the
last step both evaluated. `--no-docs` leaves the docs to a later `--docs-only` (a machine without
plotly); the run's facts are kept in <out>/info.json for it.

Stages, each a `python -m train ...` command (printed as it runs):
1. data: TinyZoom (`train synth`): a train split for the warm start, a validation split whose
   items are the RL queries, the test split for evaluation;
2. warm start: the shipped tiny model fine-tuned (`train sft`) on a mix where textual answers
   dominate (only `--pixel-share` of the zoom-needed and video traces kept), so the learning
   trap can appear;
3. RL twice from that checkpoint (`train rl`), same seed and steps, curiosity on and off, as two
   parallel processes (torch threads split between them; both on the GPU when there is one),
   each evaluating TinyZoom zoom-needed / zoom-optional accuracy and RaPR every few steps;
4. experiments/rl_ablation.md (table) and experiments/rl_ablation.html (plotly curves) from the two metrics files.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    # real run, measured on one H200 + 16 cores: data 36 s, warm start 72 s, RL 2.6-2.9 s per step
    # (both arms at once, evals included); give it a --budget
    "full": dict(sft_train=2000, rl_queries=400, test=330, warm_steps=200, rl_steps=200, group=8, batch=32,
                 eval_every=5, eval_limit=100, max_new_tokens=96, workers=14, lr=2e-5, warm_lr=3e-4),
    # every stage end to end on a laptop CPU
    "smoke": dict(sft_train=120, rl_queries=16, test=20, warm_steps=4, rl_steps=2, group=4, batch=8,
                  eval_every=1, eval_limit=8, max_new_tokens=96, workers=1, lr=2e-5, warm_lr=3e-4),
}
TEXTUAL = ("textual", "textual_notool")
WINDOW = 10  # steps per row of the docs' rollout table
RL_MARGIN_S = 45  # under a budget: each arm's model loading, its last eval and saving


def run(cmd: list[str], log_path: Path, env: dict | None = None, wait: bool = True):
    print("$", " ".join(cmd), flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    f = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if not wait:
        return proc
    if proc.wait() != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log_path}")
    return proc


def warm_mix(data: Path, pixel_share: float, seed: int = 0) -> dict[str, int]:
    """train_warm.jsonl, a mix where textual answers dominate: every textual trace; of the
    tool-using traces (zoom-needed, video) only `pixel_share` kept as they are, the others turned
    into direct answers (system, question, the trace's final answer turn), i.e. answers given
    without looking closer, as a warm start that mostly answers in text would give them."""
    import random

    rng = random.Random(seed)
    kept: dict[str, int] = {}
    with (data / "train.jsonl").open() as src, (data / "train_warm.jsonl").open("w") as dst:
        for line in src:
            rec = json.loads(line)
            trace = rec["meta"].get("trace", "")
            if trace not in TEXTUAL and rng.random() >= pixel_share:
                final = [m for m in rec["messages"] if m["role"] == "assistant"][-1]
                rec["messages"], rec["train_turns"] = rec["messages"][:2] + [final], [True]
                trace = rec["meta"]["trace"] = "textual_from_" + trace
                line = json.dumps(rec, ensure_ascii=False) + "\n"
            dst.write(line)
            kept[trace] = kept.get(trace, 0) + 1
    return kept


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in rows if "reward" in r], [r for r in rows if "eval_rapr" in r]


def windowed(train: list[dict], size: int) -> dict[int, dict]:
    """Means of the rollout metrics over windows of `size` steps (steps 1..size, size+1..2*size, ...),
    keyed by window; one step's rollouts are too few to read a trend from. A metric missing from a
    step (video RaPR where the batch held no video) is left out of its mean."""
    out: dict[int, dict] = {}
    for k in sorted({(r["step"] - 1) // size for r in train}):
        rows = [r for r in train if (r["step"] - 1) // size == k]
        means = {}
        for key in ("rapr", "rapr_image", "rapr_video", "accuracy", "reward"):
            vals = [r[key] for r in rows if r.get(key) is not None]
            means[key] = sum(vals) / len(vals) if vals else float("nan")
        out[k] = means
    return out


def budget_note(info: dict, data: dict) -> str:
    if not info.get("budget"):
        return ""
    reached = ", ".join(f"{name} {max([r['step'] for r in train] or [0])}" for name, (train, _) in data.items())
    return f" within a {info['budget']:.0f} s budget (steps reached: {reached})"


def goal_check(evals: dict[str, dict[int, dict]], H: float) -> dict | None:
    """The issue's goal at the last step both arms evaluated (a time budget can stop them apart):
    does the curiosity run keep eval RaPR >= H, and is its zoom-needed accuracy higher?"""
    if set(evals) != {"curiosity", "no_curiosity"}:
        return None
    common = set(evals["curiosity"]) & set(evals["no_curiosity"])
    if not common:
        return None
    step = max(common)
    c, n = evals["curiosity"][step], evals["no_curiosity"][step]
    keeps = all(r["eval_rapr"] >= H for s, r in evals["curiosity"].items() if s <= step)
    return {"step": step, "keeps_rapr": keeps, "curiosity_acc": c["eval_zoom_needed_acc"],
            "no_curiosity_acc": n["eval_zoom_needed_acc"],
            "higher": c["eval_zoom_needed_acc"] > n["eval_zoom_needed_acc"]}


def write_docs(arms: dict[str, Path], info: dict, md: Path, html: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    data = {name: read_metrics(path / "metrics.jsonl") for name, path in arms.items()}
    H = info["H"]
    lines = ["# Curiosity ablation on TinyZoom (measured)", "",
             f"Command: `{info['command']}`  ", f"Machine: {info['machine']}; wall time {info['seconds']:.0f} s.  ",
             f"Warm start: the shipped tiny model + {info['warm_steps']} SFT steps on a textual-dominated mix "
             f"({info['warm_mix']}). RL: up to {info['rl_steps']} steps{budget_note(info, data)}, group {info['group']}, "
             f"{info['batch']} rollouts per step, seed {info['seed']}, on {info['rl_queries']} validation queries; "
             f"evaluation: greedy, {info['eval_items']} TinyZoom test items (zoom-needed + zoom-optional). "
             f"RaPR = share of answers that used at least one visual operation; H = {H}.", "",
             "| step | curiosity: zoom-needed acc | curiosity: zoom-optional acc | curiosity: RaPR "
             "| no curiosity: zoom-needed acc | no curiosity: zoom-optional acc | no curiosity: RaPR |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    evals = {name: {r["step"]: r for r in ev} for name, (_, ev) in data.items()}
    for step in sorted(set().union(*[set(e) for e in evals.values()])):
        cells = []
        for name in ("curiosity", "no_curiosity"):
            r = evals[name].get(step, {})
            cells += [f"{r[k]:.3f}" if k in r else "" for k in ("eval_zoom_needed_acc", "eval_zoom_optional_acc",
                                                              "eval_rapr")]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "Training rollouts (mean over the run / last step):", "",
              "| run | reward | accuracy | RaPR (rollouts) | curiosity bonus | penalty | ops per trajectory |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, (train, _) in data.items():
        def both(k):
            vals = [r[k] for r in train if r.get(k) is not None]
            return f"{sum(vals) / len(vals):.3f} / {vals[-1]:.3f}" if vals else ""
        lines.append(f"| {name} | " + " | ".join(both(k) for k in ("reward", "accuracy", "rapr", "curiosity",
                                                                    "penalty", "ops_per_traj")) + " |")
    lines += ["", f"Training rollouts (sampled at temperature 1), means over windows of {WINDOW} steps:", "",
              "| steps | curiosity: RaPR | curiosity: image / video RaPR | curiosity: accuracy "
              "| no curiosity: RaPR | no curiosity: image / video RaPR | no curiosity: accuracy |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    windows = {name: windowed(train, WINDOW) for name, (train, _) in data.items()}
    for k in sorted(set().union(*[set(w) for w in windows.values()])):
        cells = []
        for name in ("curiosity", "no_curiosity"):
            w = windows.get(name, {}).get(k)
            cells += ["", "", ""] if w is None else [
                f"{w['rapr']:.3f}", f"{w['rapr_image']:.3f} / {w['rapr_video']:.3f}", f"{w['accuracy']:.3f}"]
        lines.append(f"| {k * WINDOW + 1}-{(k + 1) * WINDOW} | " + " | ".join(cells) + " |")
    check = goal_check(evals, H)
    if check:
        lines += ["", f"Goal check at step {check['step']}, the last step both runs evaluated: the curiosity run "
                  f"keeps eval RaPR >= H at every evaluation up to it: {'yes' if check['keeps_rapr'] else 'no'}; "
                  f"zoom-needed accuracy {check['curiosity_acc']:.3f} (curiosity) vs "
                  f"{check['no_curiosity_acc']:.3f} (no curiosity): {'higher' if check['higher'] else 'not higher'}. "
                  "Greedy evaluation answers directly whenever a direct answer is the likelier turn; the rollouts' "
                  "RaPR over the last window above: " + ", ".join(
                      f"{name} {w[max(w)]['rapr']:.3f}" for name, w in windows.items() if w) + f" (H = {H})."]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines) + "\n")

    fig = make_subplots(rows=2, cols=2, subplot_titles=("zoom-needed accuracy (eval)", "zoom-optional accuracy (eval)",
                                                        "RaPR (eval)", "RaPR (training rollouts)"))
    colors = {"curiosity": "#1f77b4", "no_curiosity": "#d62728"}
    for name, (train, ev) in data.items():
        ev = sorted(ev, key=lambda r: r["step"])
        steps = [r["step"] for r in ev]
        for (row, col), key in (((1, 1), "eval_zoom_needed_acc"), ((1, 2), "eval_zoom_optional_acc"),
                                ((2, 1), "eval_rapr")):
            fig.add_trace(go.Scatter(x=steps, y=[r.get(key) for r in ev], name=name, legendgroup=name,
                                     showlegend=(row, col) == (1, 1), line={"color": colors[name]}), row=row, col=col)
        fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=[r.get("rapr") for r in train], name=name,
                                 legendgroup=name, showlegend=False, line={"color": colors[name]}), row=2, col=2)
    for col in (1, 2):
        fig.add_hline(y=H, line_dash="dot", row=2, col=col)
    fig.update_layout(title="Curiosity ablation on TinyZoom", height=700)
    fig.write_html(str(html), include_plotlyjs="cdn")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/rl_ablation")
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--base", default="assets/pixel-reasoner-tiny", help="checkpoint the warm start fine-tunes")
    ap.add_argument("--pixel-share", type=float, default=0.25, help="share of tool-using traces kept in the warm mix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", default="experiments", help="where rl_ablation.md/.html go")
    ap.add_argument("--set", nargs="*", default=[], help="size overrides, key=value (e.g. rl_steps=30)")
    ap.add_argument("--budget", type=float, default=None, help="wall-clock seconds for the whole run")
    ap.add_argument("--no-docs", action="store_true", help="leave the docs to a later --docs-only")
    ap.add_argument("--docs-only", action="store_true", help="write the docs from a finished run in --out")
    args = ap.parse_args(argv)
    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    arms = {"curiosity": out / "rl_curiosity", "no_curiosity": out / "rl_no_curiosity"}
    docs = ROOT / args.docs if not Path(args.docs).is_absolute() else Path(args.docs)
    if args.docs_only:
        return report(arms, json.loads((out / "info.json").read_text()), docs)
    size = dict(SIZES[args.size])
    for item in args.set:
        k, v = item.split("=", 1)
        size[k] = type(size[k])(v)
    import torch

    cuda = torch.cuda.is_available()
    cores = os.cpu_count() or 2
    py = sys.executable
    data, warm = out / "data", out / "warm"
    t0 = time.time()
    if not (data / "dataset.json").exists():
        run([py, "-m", "train", "synth", "--out", str(data), "--train", str(size["sft_train"]), "--validation",
             str(size["rl_queries"]), "--test", str(size["test"]), "--seed", "7", "--workers", str(size["workers"])],
            out / "logs" / "synth.log")
    kept = warm_mix(data, args.pixel_share, args.seed)
    print("warm mix:", kept, flush=True)
    if not (warm / "config.json").exists():
        run([py, "-m", "train", "sft", "data=" + str(data), "train_split=train_warm", "eval_split=null",
             "model=" + args.base, f"out={out / 'sft_warm'}", f"final_dir={warm}", f"max_steps={size['warm_steps']}",
             f"learning_rate={size['warm_lr']}", "lr_scheduler=constant", "warmup_ratio=0", "batch_size=32",
             f"bf16={'true' if cuda else 'false'}", "logging_steps=5", "save_steps=100000", "report_to=[]",
             f"num_workers={min(8, cores // 2) if cuda else 0}", f"seed={args.seed}", "disable_tqdm=true",
             "pixel_preset=tiny"], out / "logs" / "sft_warm.log")
    threads = max(1, cores // 2)
    common = [f"data={data}", f"model={warm}", "split=validation", f"max_steps={size['rl_steps']}",
              f"group_size={size['group']}", f"batch_size={size['batch']}", "grad_accum=1",
              f"max_new_tokens={size['max_new_tokens']}", f"learning_rate={size['lr']}", "temperature=1.0",
              f"eval_every={size['eval_every']}", "eval_split=test", f"eval_limit={size['eval_limit']}",
              f"eval_batch={min(64, size['eval_limit'])}", "freeze_vision=false", "report_to=[]", "disable_tqdm=true",
              f"seed={args.seed}", f"torch_threads={threads}", "save_steps=100000", "log_trajectories=0"]
    if args.budget:  # what the data and warm start left, less loading, the last eval and saving
        left = args.budget - (time.time() - t0) - RL_MARGIN_S
        if left <= 0:
            sys.exit(f"no time left for RL: the budget of {args.budget:.0f} s is spent after the warm start")
        common.append(f"max_seconds={left:.0f}")
        print(f"RL arms get {left:.0f} s each", flush=True)
    procs = {}
    for name, path in arms.items():
        if path.exists():  # a fresh arm: `train rl` would otherwise resume from a checkpoint left there
            shutil.rmtree(path)
        procs[name] = run([py, "-m", "train", "rl", "--config", "configs/rl_tiny.json", *common, f"out={path}",
                           f"curiosity={'true' if name == 'curiosity' else 'false'}"],
                          out / "logs" / f"rl_{name}.log", env={"OMP_NUM_THREADS": str(threads)}, wait=False)
    for name, proc in procs.items():
        if proc.wait() != 0:
            sys.exit(f"RL arm {name} failed; see {out / 'logs' / f'rl_{name}.log'}")
    seconds = time.time() - t0
    machine = (f"{torch.cuda.get_device_name(0)}, " if cuda else "CPU only, ") + f"{cores} CPU cores"
    info = {"command": "python -m experiments.rl_ablation " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine, "seconds": seconds, "warm_steps": size["warm_steps"],
            "warm_mix": ", ".join(f"{k}: {v}" for k, v in sorted(kept.items())), "rl_steps": size["rl_steps"],
            "group": size["group"], "batch": size["batch"], "seed": args.seed, "rl_queries": size["rl_queries"],
            "eval_items": size["eval_limit"], "H": 0.3, "budget": args.budget}
    (out / "info.json").write_text(json.dumps(info, indent=2))
    print(f"done in {seconds:.0f} s", flush=True)
    if args.no_docs:
        print(f"docs: python -m experiments.rl_ablation --out {args.out} --docs-only")
        return 0
    return report(arms, info, docs)


def report(arms: dict[str, Path], info: dict, docs: Path) -> int:
    write_docs(arms, info, docs / "rl_ablation.md", docs / "rl_ablation.html")
    print((docs / "rl_ablation.md").read_text())
    print(f"wrote {docs / 'rl_ablation.md'}, {docs / 'rl_ablation.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
