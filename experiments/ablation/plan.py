"""What the ablation runs: its sizes, its five rows, and the stages (each one command) that make them.

Pure: builds the stage list from a size and an output folder; experiments.ablation.stages runs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = str(ROOT / "assets" / "pixel-reasoner-tiny")
RL_CONFIG = str(ROOT / "configs" / "rl_tiny.json")
EVAL_CATEGORIES = ("zoom_needed", "zoom_optional", "video")


@dataclass(frozen=True)
class Size:
    """How big one run of the whole table is."""

    train: int = field(metadata={"help": "TinyZoom train records the warm-start mixes are drawn from"})
    queries: int = field(metadata={"help": "RL queries (the validation split)"})
    test: int = field(metadata={"help": "test split size; its zoom-needed, zoom-optional and video items are evaluated"})
    warm_steps: int = field(metadata={"help": "SFT steps of each warm start"})
    warm_batch: int = field(metadata={"help": "SFT records per step"})
    warm_lr: float = field(metadata={"help": "SFT learning rate (constant)"})
    rl_steps: int = field(metadata={"help": "GRPO steps per RL run (the same for every row)"})
    group: int = field(metadata={"help": "rollouts per query (the GRPO group)"})
    batch: int = field(metadata={"help": "rollouts per step"})
    rl_lr: float = field(metadata={"help": "RL learning rate (constant)"})
    eval_every: int = field(metadata={"help": "an in-run greedy TinyZoom eval every N steps (the accuracy curve)"})
    eval_limit: int = field(metadata={"help": "items of that in-run eval"})
    samples: int = field(metadata={"help": "k, answers per item of the sampled (temperature 1) evaluation"})
    seeds: int = field(metadata={"help": "seeds per RL row"})
    max_new_tokens: int = field(default=96, metadata={"help": "new tokens per turn (rollouts and evals)"})
    pixel_share: float = field(default=0.3, metadata={"help": "share of pixel/video traces kept as they are in "
                                                                "the trap mix (the rest become direct answers)"})
    threads: int = field(default=2, metadata={"help": "torch threads"})
    bf16: bool = field(default=False, metadata={"help": "bf16 training (GPU)"})

    def with_overrides(self, items: list[str]) -> "Size":
        """`key=value` overrides, each value read as the field's type."""
        types = {f.name: f.type for f in fields(self)}
        changes = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or key not in types:
                raise SystemExit(f"--set {item!r}: expected key=value with key one of {', '.join(types)}")
            kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}[types[key]]
            changes[key] = kind(value)
        return replace(self, **changes)


SIZES = {
    # CI: every stage and all five rows wired, one seed, a step each; no claims
    "smoke": Size(train=16, queries=4, test=10, warm_steps=1, warm_batch=4, warm_lr=5e-4, rl_steps=1, group=2,
                  batch=4, rl_lr=1e-4, eval_every=1, eval_limit=2, samples=2, seeds=1),
    # the whole table in under an hour on 2 shared CPU cores (measured: docs/rl_ablation.md)
    "cpu": Size(train=160, queries=24, test=48, warm_steps=10, warm_batch=16, warm_lr=2e-4, rl_steps=24, group=4,
                batch=8, rl_lr=1e-4, eval_every=4, eval_limit=12, samples=2, seeds=3),
    # one lent GPU: the earlier two-arm run's scale (2.6-2.9 s per 32-rollout step on an H200), 3 seeds
    "gpu": Size(train=2000, queries=400, test=330, warm_steps=200, warm_batch=32, warm_lr=2e-4, rl_steps=100,
                group=8, batch=32, rl_lr=2e-5, eval_every=10, eval_limit=100, samples=4, seeds=3, threads=8,
                bf16=True),
}


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    start: str  # "trap" | "trap_nocorr" | "shipped": the checkpoint RL starts from (None: no RL)
    curiosity: bool | None  # None: the row has no RL


ROWS = (
    Row("warm", "Warm-start model (no RL)", "trap", None),
    Row("no_curiosity", "RL without curiosity", "trap", False),
    Row("no_warm_start", "RL without warm start", "shipped", True),
    Row("no_correction", "RL without correction data", "trap_nocorr", True),
    Row("full", "RL with curiosity (full)", "trap", True),
)
ROW = {r.key: r for r in ROWS}


@dataclass
class Stage:
    """One resumable unit: a command (`python -m <module> <argv>`) whose result lands in `out`."""

    name: str
    module: str  # "train" | "core" | "mix" (the driver's own data step)
    argv: list[str]
    out: Path
    fresh: bool = True  # start over when unfinished (RL appends to metrics.jsonl; eval resumes by itself)

    def command(self) -> str:
        if self.module == "mix":
            return "experiments.ablation.mixes.write_mixes(" + ", ".join(self.argv) + ")"
        return f"python -m {self.module} " + " ".join(self.argv)


def model_dir(out: Path, start: str) -> str:
    return SHIPPED if start == "shipped" else str(out / "sft" / start / "final")


def rl_dir(out: Path, row: str, seed: int) -> Path:
    return out / "rl" / row / f"seed{seed}"


def eval_dir(out: Path, model: str, mode: str) -> Path:
    return out / "eval" / model / mode


def rl_rows(rows: list[str] | None = None) -> list[Row]:
    """The RL rows to run (all four by default)."""
    unknown = set(rows or ()) - {r.key for r in ROWS if r.curiosity is not None}
    if unknown:
        raise SystemExit(f"unknown RL rows {sorted(unknown)}; choose from "
                         + ", ".join(r.key for r in ROWS if r.curiosity is not None))
    return [r for r in ROWS if r.curiosity is not None and (not rows or r.key in rows)]


def eval_models(out: Path, size: Size, rows: list[str] | None = None) -> dict[str, str]:
    """Name -> checkpoint of every model the table evaluates: the three starts and each RL run's end."""
    models = {start: model_dir(out, start) for start in ("shipped", "trap", "trap_nocorr")}
    for row in rl_rows(rows):
        for seed in range(size.seeds):
            models[f"{row.key}-seed{seed}"] = str(rl_dir(out, row.key, seed) / "final")
    return models


def stages(out: Path, size: Size, rl_extra: list[str] = (), rows: list[str] | None = None) -> list[Stage]:
    """The stages in order; `rl_extra` are further `train rl` overrides for every RL run (e.g. H=0.6),
    `rows` limits the RL rows (a follow-up run that tests one reason)."""
    data = out / "data"
    plan = [Stage("data", "train", ["synth", "--out", str(data), "--train", str(size.train), "--validation",
                                    str(size.queries), "--test", str(size.test), "--seed", "7", "--workers",
                                    str(size.threads), "--no-progress"], data),
            Stage("mix", "mix", [str(data), str(size.pixel_share)], data / "mixes", fresh=False)]
    for start, split in (("trap", "train_trap"), ("trap_nocorr", "train_trap_nocorr")):
        plan.append(Stage(f"sft-{start}", "train", [
            "sft", f"data={data}", f"train_split={split}", "eval_split=null", f"model={SHIPPED}",
            f"out={out / 'sft' / start}", f"max_steps={size.warm_steps}", f"batch_size={size.warm_batch}",
            f"learning_rate={size.warm_lr}", "lr_scheduler=constant", "warmup_ratio=0", f"bf16={str(size.bf16).lower()}",
            "logging_steps=1", "save_steps=100000", "report_to=[]", "seed=0", "disable_tqdm=true", "pixel_preset=tiny",
            f"torch_threads={size.threads}"], out / "sft" / start))
    for row in rl_rows(rows):
        for seed in range(size.seeds):
            run = rl_dir(out, row.key, seed)
            plan.append(Stage(f"rl-{row.key}-seed{seed}", "train", [
                "rl", "--config", RL_CONFIG, f"data={data}", f"model={model_dir(out, row.start)}",
                f"out={run}", "split=validation", f"max_steps={size.rl_steps}", f"group_size={size.group}",
                f"batch_size={size.batch}", "grad_accum=1", f"max_new_tokens={size.max_new_tokens}",
                f"learning_rate={size.rl_lr}", "temperature=1.0", f"curiosity={str(row.curiosity).lower()}",
                f"eval_every={size.eval_every}", "eval_split=test", f"eval_limit={size.eval_limit}",
                f"eval_batch={size.eval_limit}", "freeze_vision=false", "report_to=[]", "disable_tqdm=true",
                f"seed={seed}", f"torch_threads={size.threads}", "save_steps=100000", "log_trajectories=0",
                f"bf16={str(size.bf16).lower()}", *rl_extra], run))
    for name, model in eval_models(out, size, rows).items():
        for mode, extra in (("greedy", ["--temperature", "0", "--samples", "1"]),
                            ("sampled", ["--temperature", "1", "--samples", str(size.samples)])):
            plan.append(Stage(f"eval-{name}-{mode}", "core", [
                "eval", "--bench", "tinyzoom", "--data", str(data), "--split", "test", "--categories",
                ",".join(EVAL_CATEGORIES), "--model", model, "--out", str(eval_dir(out, name, mode)), "--no-db",
                "--quiet", "--batch", "16", "--max-new-tokens", str(size.max_new_tokens), "--seed", "0",
                "--device", "cpu" if not size.bf16 else "cuda", *extra], eval_dir(out, name, mode), fresh=False))
    return plan
