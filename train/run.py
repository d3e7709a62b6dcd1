"""The run harness of `python -m train sft|rl|vision`: the config base and its loader, the command line,
the run folder, resuming, the wall-clock budget and the saved model.

A config is a dataclass extending `RunConfig`; every field carries its help (`option(default, help)`), so
`python -m train <command> --help` lists them all. A subclass may redefine a field's default with a plain
annotation; the help is then the base's. Configs load from JSON (`--config`) plus `key=value` overrides.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "chat_template.jinja",
                   "chat_template.json", "studio.json", "generation_config.json")


def option(default=dataclasses.MISSING, help: str = "", *, factory=dataclasses.MISSING):
    """A config field with its help text (`factory` for a mutable default)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"help": help})


@dataclass
class RunConfig:
    """Fields every training command has."""

    model: str = option("assets/pixel-reasoner-tiny", "the start checkpoint: a local folder or a hub id")
    out: str = option("runs/run", "the run folder: config, metrics.jsonl, checkpoints, final model")
    final_dir: str | None = option(None, "where the final model goes (default <out>/final)")
    learning_rate: float = option(1e-3, "peak learning rate")
    warmup_ratio: float = option(0.05, "share of training spent warming the learning rate up")
    weight_decay: float = option(0.0, "AdamW weight decay")
    batch_size: int = option(8, "examples per device per optimiser micro-batch")
    max_steps: int = option(-1, "stop after this many optimiser steps (-1: by epochs)")
    max_seconds: float | None = option(None, "a wall-clock budget: stop once it is spent (and save)")
    seed: int = option(0, "random seed")
    torch_threads: int | None = option(None, "torch CPU threads (default: torch's choice)")

    @classmethod
    def help_for(cls, name: str) -> str:
        """A field's help: its own, else the one a base class gave it."""
        for klass in cls.__mro__:
            f = getattr(klass, "__dataclass_fields__", {}).get(name)
            if f is not None and f.metadata.get("help"):
                return f.metadata["help"]
        return ""

    @classmethod
    def fields_help(cls) -> str:
        lines = ["config fields (JSON in --config, or key=value):"]
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {f.name} = {json.dumps(default)}\n      {cls.help_for(f.name)}")
        return "\n".join(lines)

    @classmethod
    def from_file(cls, path: str | Path | None, overrides: list[str] = ()):
        """The config of a JSON file (or the defaults) with `key=value` overrides, values read as JSON
        when they parse; unknown keys are an error naming the known ones."""
        data = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
        known = {f.name for f in fields(cls)}
        for item in overrides:
            if "=" not in item:
                raise SystemExit(f"override {item!r} must be key=value")
            key, value = item.split("=", 1)
            try:
                data[key] = json.loads(value)
            except json.JSONDecodeError:
                data[key] = value
        unknown = sorted(set(data) - known - {"_comment"})
        if unknown:
            raise SystemExit(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        data.pop("_comment", None)
        try:
            return cls(**data)
        except ValueError as e:  # a value the run cannot take (__post_init__)
            raise SystemExit(f"config: {e}") from None


@dataclass
class TrainerRunConfig(RunConfig):
    """Fields of the commands built on TRL's trainers (SFT and RL)."""

    epochs: float = option(3.0, "passes over the data (when max_steps is -1)")
    lr_scheduler: str = option("cosine", "transformers' scheduler name (constant under max_seconds)")
    max_grad_norm: float = option(1.0, "gradient clipping")
    grad_accum: int = option(1, "micro-batches per optimiser step")
    freeze_vision: bool = option(False, "freeze the vision tower (the 7B recipes do; the tiny model must learn it)")
    bf16: bool = option(False, "train under bf16 autocast (or DeepSpeed's bf16)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass")
    attn_implementation: str | None = option(None, "e.g. \"flash_attention_2\" on GPUs")
    deepspeed: str | None = option(None, "a DeepSpeed JSON config (configs/deepspeed_zero2.json)")
    logging_steps: int = option(10, "write metrics every N steps")
    save_steps: int = option(500, "save a checkpoint every N steps (a rerun resumes from the last)")
    save_total_limit: int = option(2, "checkpoints kept")
    save_dtype: str | None = option(None, "dtype of the saved weights, e.g. \"bfloat16\" to halve them")
    report_to: list[str] = option(help="transformers' loggers", factory=lambda: ["tensorboard"])
    disable_tqdm: bool = option(False, "no progress bars")


def warmup_cosine(lr: float, frac: float, warmup: float) -> float:
    """The learning rate at `frac` of training: linear warmup over the first `warmup` share (from 1%
    of lr), then cosine decay to zero."""
    if frac < warmup:
        return lr * max(frac / warmup, 0.01)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warmup) / (1 - warmup))))


def native_bf16() -> bool:
    """Whether this machine computes bf16 natively: a CUDA GPU with bf16, or a CPU with avx512_bf16 or
    AMX (where bf16 autocast measured ~1.6x faster; elsewhere it is emulated and slower)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TimeBudgetCallback(TrainerCallback, ExportableState):
    """Train for a wall-clock budget rather than a step count: the learning rate follows warmup then
    cosine decay over elapsed time, or over the steps where the epochs end first (set before each
    optimiser step), and training stops at the budget.
    Used where a machine is lent for minutes and its speed is not known ahead. With `lr=None` the
    schedule is left alone and only the stop applies (RL's constant learning rate). The time spent is
    saved with each checkpoint, so a resumed run goes on with the budget and schedule it had left."""

    def __init__(self, seconds: float, lr: float | None, warmup: float = 0.05, spent: float = 0.0) -> None:
        self.seconds, self.lr, self.warmup, self.spent, self.t0 = seconds, lr, warmup, spent, None

    def state(self) -> dict:
        spent = time.time() - self.t0 if self.t0 is not None else self.spent
        return {"args": {"seconds": self.seconds, "lr": self.lr, "warmup": self.warmup}, "attributes": {"spent": spent}}

    def lr_at(self, frac: float) -> float:
        return warmup_cosine(self.lr, frac, self.warmup)

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = rank0_clock() - self.spent

    def on_step_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kw):
        if self.lr is None:
            return
        steps = state.global_step / state.max_steps if state.max_steps and state.max_steps > 0 else 0.0
        lr = self.lr_at(max((rank0_clock() - self.t0) / self.seconds, steps))  # whichever ends first
        for group in (optimizer.param_groups if optimizer is not None else []):
            group["lr"] = lr
        if hasattr(lr_scheduler, "base_lrs"):  # the constant scheduler keeps it, and the logs show it
            lr_scheduler.base_lrs = [lr] * len(lr_scheduler.base_lrs)

    def on_step_end(self, args, state, control, **kw):
        if rank0_clock() - self.t0 >= self.seconds:
            control.should_training_stop = True
            control.should_save = True


class SaveEveryMinutes(TrainerCallback):
    """A checkpoint every `minutes` of training besides save_steps, so a killed run loses at most that."""

    def __init__(self, minutes: float) -> None:
        self.seconds, self.last = minutes * 60, time.time()
        self.now = self.last

    def on_train_begin(self, args, state, control, **kw):
        self.last = self.now = rank0_clock()

    def on_step_end(self, args, state, control, **kw):
        self.now = rank0_clock()
        if self.now - self.last >= self.seconds:
            control.should_save = True

    def on_save(self, args, state, control, **kw):
        self.last = self.now


def rank0_clock() -> float:
    """The time on rank 0, the same on every rank of a distributed run: a decision taken by the clock
    (stop, save, the learning rate) must be every rank's, or one rank saves or stops alone while the
    others wait for it in a collective. A plain `time.time()` in a single process."""
    now = time.time()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([now], dtype=torch.float64)
        dist.broadcast(t, 0)
        now = float(t)
    return now


def copy_processor_files(source: Path, final: Path) -> None:
    """The start checkpoint's processor configs, chat template and studio.json, where `final` lacks them."""
    for name in PROCESSOR_FILES:
        if (source / name).exists() and not (final / name).exists():
            shutil.copy(source / name, final / name)


def save_final(trainer, encoder, cfg, source: Path | None, final: Path, pictures: list | None = None) -> None:
    """A plain HF folder: weights, config, tokenizer, processor configs (copied from the start), and
    the familiarity reference of the model over its training `pictures` (train/familiarity.py)."""
    if cfg.save_dtype:
        trainer.model.to(getattr(torch, cfg.save_dtype))
    trainer.save_model(str(final))
    if not trainer.is_world_process_zero():
        return
    encoder.tokenizer.save_pretrained(str(final))
    if source is not None:
        copy_processor_files(source, final)
    if not (final / "studio.json").exists():
        (final / "studio.json").write_text(json.dumps({"pixel_preset": cfg.pixel_preset}, indent=2))
    if pictures:
        from train.familiarity import save_for_run

        save_for_run(trainer.model, encoder, pictures, final, cfg.pixel_preset or "train")


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (accelerate, torchrun set RANK), or a plain run."""
    return int(os.environ.get("RANK", "0")) == 0


SHIPPED = Path(__file__).resolve().parents[1] / "assets"


def refuse_shipped(cfg) -> None:
    """No run may write into assets/ (the embedded model and examples): a run that did replaced the
    shipped model with whatever it trained. Promoting a run is an explicit copy, never a side effect."""
    for key in ("out", "final_dir"):
        value = getattr(cfg, key, None)
        if value and Path(value).resolve().is_relative_to(SHIPPED):
            raise SystemExit(f"error: {key}={value} is inside assets/ (the shipped model and examples); write runs "
                             "under runs/ or data/runs/ and pass --model <run>/final to use the result")


def start_run(cfg, name: str) -> Path:
    """Shared start of `train sft|rl|vision`: torch threads, the run folder, and the config as run
    (`<out>/<name>_config.json`, written by the main process), so every run folder says how it was made."""
    refuse_shipped(cfg)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        (out / f"{name}_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return out


class ResumesSavedWeights:
    """Trainer mixin: resuming a run loads the checkpoint's weights through `load_saved_weights`
    (Trainer's own loader matches none of the names transformers 5 saves Qwen2.5-VL under)."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_saved_weights(model or self.model, resume_from_checkpoint)


def last_checkpoint(out: Path) -> str | None:
    """Resume from the newest complete checkpoint-N of a previous run in the same folder (one a kill cut
    off while saving has no trainer_state.json yet and is passed over)."""
    ckpts = sorted((p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()),  # written last
                   key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    return str(ckpts[-1]) if ckpts else None


def finished_step(checkpoint: str | None, max_steps: int) -> int | None:
    """The step of a checkpoint that already reached the run's last step, else None.

    Trainer checks for the last step only after taking one, so resuming a finished run took one
    step more than asked (and evaluated and saved it); a caller skips training instead."""
    if checkpoint is None:
        return None
    path = Path(checkpoint) / "trainer_state.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    step, last = int(state.get("global_step", 0)), max_steps if max_steps > 0 else int(state.get("max_steps", 0))
    budget = state.get("stateful_callbacks", {}).get("TimeBudgetCallback")
    if isinstance(budget, dict) and budget["attributes"].get("spent", 0) >= budget["args"]["seconds"]:
        return step  # its wall-clock budget was spent
    return step if last > 0 and step >= last else None


def load_saved_weights(model, checkpoint: str) -> None:
    """Put a checkpoint's weights into `model` the way from_pretrained reads them.

    Trainer's resume loads model.safetensors key by key, but transformers 5 saves Qwen2.5-VL under
    its legacy names (`visual.*`, `model.layers.*`): nothing matched, and a resumed run silently went
    on from its start weights. from_pretrained maps the names; the copy costs the model's size once."""
    saved = type(model).from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict())


def train_or_finish(trainer, out: Path, max_steps: int) -> tuple[int, float | None]:
    """Train from the last checkpoint in `out` and return (global step, training loss). A run that
    already reached its last step only takes that checkpoint's weights (loss None): Trainer would
    take one step more (see finished_step)."""
    resume = last_checkpoint(out)
    steps = finished_step(resume, max_steps)
    if steps is not None:
        logging.getLogger(__name__).info("%s already reached step %d: no further training", resume, steps)
        load_saved_weights(trainer.model, resume)
        return steps, None
    if resume:
        logging.getLogger(__name__).info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    return result.global_step, result.training_loss


def run_main(prog: str, doc: str, config_cls, train_fn, argv: list[str] | None, split=None) -> int:
    """The shared command line of `train sft|rl|vision`: --config FILE, --out, key=value overrides;
    `--help` lists every config field with its type, default and help. `split(cfg)` says how many CPU
    processes the command runs as (train/processes.py); more than 1 and this process only launches them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0], epilog=config_cls.fields_help(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help=f"JSON file with {config_cls.__name__} fields")
    ap.add_argument("--out", help="output folder (overrides the config's `out`)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, values parsed as JSON when possible")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_cls.from_file(args.config, args.overrides)
    if args.out:
        cfg.out = args.out
    ranks = split(cfg) if split else 1
    if ranks > 1:
        from train.processes import launch

        return launch(["train", prog.split()[-1], *argv], ranks, cfg.batch_size, cfg.torch_threads)
    summary = train_fn(cfg)
    if is_main_process():  # one summary per run, not one per process
        print(json.dumps(summary))
    return 0
