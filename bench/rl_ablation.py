"""The curiosity ablation, measured: RL with and without the curiosity term from one warm start.

    python bench/rl_ablation.py --out runs/rl_ablation                 # the real run (one GPU + 16 cores, ~7 min)
    python bench/rl_ablation.py --out /tmp/rl_ablation --size smoke    # every stage, a few steps (CPU, ~4 min)

Stages, each a `python -m train ...` command (printed as it runs):
1. data: TinyZoom (`train synth`): a train split for the warm start, a validation split whose
   items are the RL queries, the test split for evaluation;
2. warm start: the shipped tiny model fine-tuned (`train sft`) on a mix where textual answers
   dominate (only `--pixel-share` of the zoom-needed and video traces kept), so the learning
   trap can appear;
3. RL twice from that checkpoint (`train rl`), same seed and steps, curiosity on and off, as two
   parallel processes (torch threads split between them; both on the GPU when there is one),
   each evaluating TinyZoom zoom-needed / zoom-optional accuracy and RaPR every few steps;
4. docs/rl_ablation.md (table) and docs/rl_ablation.html (plotly curves) from the two metrics files.
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
    # real run: sized for one H100 + 16 cores in about 7 minutes
    "full": dict(sft_train=3000, rl_queries=400, test=330, warm_steps=200, rl_steps=40, group=8, batch=32,
                 eval_every=5, eval_limit=100, max_new_tokens=96, workers=14, lr=2e-5, warm_lr=3e-4),
    # every stage end to end on a laptop CPU
    "smoke": dict(sft_train=120, rl_queries=16, test=20, warm_steps=4, rl_steps=2, group=4, batch=8,
                  eval_every=1, eval_limit=8, max_new_tokens=96, workers=1, lr=2e-5, warm_lr=3e-4),
}
TEXTUAL = ("textual", "textual_notool")


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


def write_docs(arms: dict[str, Path], info: dict, md: Path, html: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    data = {name: read_metrics(path / "metrics.jsonl") for name, path in arms.items()}
    H = info["H"]
    lines = ["# Curiosity ablation on TinyZoom (measured)", "",
             f"Command: `{info['command']}`  ", f"Machine: {info['machine']}; wall time {info['seconds']:.0f} s.  ",
             f"Warm start: the shipped tiny model + {info['warm_steps']} SFT steps on a textual-dominated mix "
             f"({info['warm_mix']}). RL: {info['rl_steps']} steps, group {info['group']}, "
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
    final = {name: max(ev.values(), key=lambda r: r["step"]) for name, ev in evals.items() if ev}
    if len(final) == 2:
        c, n = final["curiosity"], final["no_curiosity"]
        keeps = all(r["eval_rapr"] >= H for r in evals["curiosity"].values())
        lines += ["", f"Goal check: curiosity run keeps eval RaPR >= H at every evaluation: {'yes' if keeps else 'no'}; "
                  f"final zoom-needed accuracy {c['eval_zoom_needed_acc']:.3f} (curiosity) vs "
                  f"{n['eval_zoom_needed_acc']:.3f} (no curiosity): "
                  f"{'higher' if c['eval_zoom_needed_acc'] > n['eval_zoom_needed_acc'] else 'not higher'}."]
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
    ap.add_argument("--docs", default="docs", help="where rl_ablation.md/.html go")
    ap.add_argument("--set", nargs="*", default=[], help="size overrides, key=value (e.g. rl_steps=30)")
    args = ap.parse_args(argv)
    size = dict(SIZES[args.size])
    for item in args.set:
        k, v = item.split("=", 1)
        size[k] = type(size[k])(v)
    import torch

    cuda = torch.cuda.is_available()
    cores = os.cpu_count() or 2
    out, py = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out), sys.executable
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
    arms = {"curiosity": out / "rl_curiosity", "no_curiosity": out / "rl_no_curiosity"}
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
    info = {"command": "python bench/rl_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine, "seconds": seconds, "warm_steps": size["warm_steps"],
            "warm_mix": ", ".join(f"{k}: {v}" for k, v in sorted(kept.items())), "rl_steps": size["rl_steps"],
            "group": size["group"], "batch": size["batch"], "seed": args.seed, "rl_queries": size["rl_queries"],
            "eval_items": size["eval_limit"], "H": 0.3}
    docs = ROOT / args.docs if not Path(args.docs).is_absolute() else Path(args.docs)
    write_docs(arms, info, docs / "rl_ablation.md", docs / "rl_ablation.html")
    print((docs / "rl_ablation.md").read_text())
    print(f"done in {seconds:.0f} s: {docs / 'rl_ablation.md'}, {docs / 'rl_ablation.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
