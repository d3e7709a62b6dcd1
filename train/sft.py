"""Supervised fine-tuning on multi-turn, multi-image pixel-reasoning traces, on TRL's SFTTrainer.

    python -m train sft --config configs/sft_tiny.json [--out DIR] [key=value ...]
    accelerate launch --config_file configs/accelerate_zero2.yaml -m train sft --config configs/sft_7b.json

TRL's own VLM collator applies a chat template and trains every assistant token; our traces need
more: the loss must skip observation turns (user turns carrying crops/frames) and the erroneous
turns of self-correction traces (`train_turns`). So the data side is ours and TRL does the rest
(optimiser, schedule, accumulation, checkpoints, logging, DeepSpeed): a dataset that encodes each
record with core.encoding.VisionTextEncoder (labels = trained assistant tokens only) and a collator
that pads the batch. Dataset preparation is skipped (`skip_prepare_dataset`), as TRL does for VLMs.

The model starts from a local checkpoint, a hub id, or "tiny": a fresh tiny Qwen2.5-VL whose BPE
tokenizer is trained on the records' own text (train/tiny.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from transformers import TrainerCallback

from core import protocol as P
from core.encoding import IGNORE_INDEX, VisionTextEncoder
from core.operations import PIXEL_PRESETS
from train.data import SFTRecord, load_sft_records, record_answer, record_to_messages, repeat_by_category
from train.grounding import token_weights
from train.metrics import MetricsJsonlCallback

log = logging.getLogger(__name__)

PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "chat_template.jinja",
                   "chat_template.json", "studio.json", "generation_config.json")


@dataclass
class SFTRunConfig:
    data: str = "data/tinyzoom"  # a dataset folder (<split>.jsonl) or a .jsonl/.json file
    train_split: str = "train"
    eval_split: str | None = "validation"
    limit: int | None = None  # use the first N training records
    repeat: dict = field(default_factory=dict)  # category -> times its records appear, e.g. {"zoom_optional": 3, "closeup": 0.3}
    grounded_weight: float = 1.0  # loss weight of the tokens the picture decides (train.grounding); 1: plain SFT
    eval_limit: int | None = 64
    model: str = "tiny"  # "tiny", a local checkpoint folder, or a hub id
    tiny: dict = field(default_factory=dict)  # train.tiny.tiny_config overrides (vision_* for the tower)
    vocab_size: int = 2000
    pixel_preset: str = "tiny"  # core.operations.PIXEL_PRESETS: how record images are sized
    freeze_vision: bool = False  # the 7B recipe freezes the vision tower; the tiny one must learn it
    out: str = "runs/sft_tiny"
    final_dir: str | None = None  # default <out>/final
    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 1e-3
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    bf16: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # "flash_attention_2" on GPUs
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    eval_steps: int | None = None  # None: evaluate at each save
    seed: int = 0
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    deepspeed: str | None = None
    num_workers: int = 0
    torch_threads: int | None = None
    disable_tqdm: bool = False
    max_seconds: float | None = None  # a wall-clock budget: warmup + cosine over time, then stop
    save_dtype: str | None = None  # e.g. "bfloat16" to halve the shipped weights

    @classmethod
    def from_file(cls, path: str | Path | None, overrides: list[str] = ()) -> "SFTRunConfig":
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
        return cls(**data)


# ---- data ------------------------------------------------------------------------------------

class SFTCollator:
    """Encodes the batch's records on the fly (images loaded and sized by the preset) and pads it
    on the right; `labels` are -100 off the trained assistant tokens. With a grounded weight other
    than 1 the batch also carries `loss_weights` (one per token) for the trainer's weighted loss.

    The trainer's dataset holds only row numbers (TRL wants an HF Dataset; the records, with their
    image paths, stay here), so no pixels are materialised before they are needed.
    """

    def __init__(self, records: list[SFTRecord], encoder: VisionTextEncoder, preset: str,
                 grounded_weight: float = 1.0) -> None:
        self.records, self.encoder, self.limits = records, encoder, PIXEL_PRESETS[preset]
        self.grounded_weight = grounded_weight

    def encode(self, i: int):
        rec = self.records[i]
        return self.encoder.encode(record_to_messages(rec, self.limits), train_turns=rec.train_turns)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.encoder.collate([self.encode(f["row"]) for f in features], pad_left=False)
        if self.grounded_weight != 1.0:
            batch["loss_weights"] = self.loss_weights(batch["labels"], [self.records[f["row"]] for f in features])
        return batch

    def loss_weights(self, labels: torch.Tensor, records: list[SFTRecord]) -> torch.Tensor:
        weights = torch.ones(labels.shape)
        for row, rec in enumerate(records):
            (at,) = (labels[row] != IGNORE_INDEX).nonzero(as_tuple=True)
            pieces = [self.encoder.tokenizer.decode([t]) for t in labels[row, at].tolist()]
            weights[row, at] = torch.tensor(token_weights(pieces, record_answer(rec), self.grounded_weight))
        return weights


class ResumesSavedWeights:
    """Trainer mixin: resuming a run loads the checkpoint's weights through `load_saved_weights`
    (Trainer's own loader matches none of the names transformers 5 saves Qwen2.5-VL under)."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_saved_weights(model or self.model, resume_from_checkpoint)


def _trainer_class():
    from trl import SFTTrainer

    class WeightedSFTTrainer(ResumesSavedWeights, SFTTrainer):
        """SFTTrainer whose loss weighs each trained token by the batch's `loss_weights`.

        The same sum over trained tokens divided by their count as TRL's own loss (so a weight of 1 is
        plain SFT and gradient accumulation is unchanged), only scaled per token. Evaluation
        (return_outputs) and unweighted batches take TRL's path, with its entropy and accuracy metrics.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("loss_weights", None)
            if weights is None or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            outputs = model(**inputs, use_cache=False, fused_lm_head=True)  # log_probs of labels[:, 1:]
            mask = outputs.label_mask
            weighted = -(outputs.log_probs * weights[:, 1:].to(outputs.log_probs) * mask).sum()
            count = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = weighted / torch.as_tensor(count).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:  # as TRL: DDP averages
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            return loss

    return WeightedSFTTrainer


def row_dataset(rows: range):
    from datasets import Dataset

    return Dataset.from_dict({"row": list(rows)})


def corpus_texts(records: list[SFTRecord], n: int = 3000) -> list[str]:
    """Rendered conversations (pads instead of pixels) to train the tiny tokenizer on."""
    from train.tiny import default_corpus

    step = max(1, len(records) // n)  # spread over the file: records are grouped by category
    return default_corpus() + [P.render_prompt(r.messages, add_generation_prompt=False) for r in records[::step][:n]]


# ---- model -----------------------------------------------------------------------------------

def build_model(cfg: SFTRunConfig, records: list[SFTRecord], out: Path):
    """(model, encoder, source_dir): the tiny model from scratch, or a checkpoint to fine-tune."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    if cfg.model == "tiny":
        from train.tiny import build_tokenizer, save_checkpoint, tiny_config

        tokenizer = build_tokenizer(corpus_texts(records), vocab_size=cfg.vocab_size)
        torch.manual_seed(cfg.seed)
        model = Qwen2_5_VLForConditionalGeneration(tiny_config(tokenizer, **cfg.tiny))
        source = save_checkpoint(model, tokenizer, out / "init", pixel_preset=cfg.pixel_preset)
        encoder = VisionTextEncoder.from_pretrained(source)
    else:
        kwargs = {"dtype": torch.float32}  # fp32 master weights; bf16=true trains under autocast (or DeepSpeed's bf16)
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(cfg.model, **kwargs)
        encoder = VisionTextEncoder.from_pretrained(cfg.model)
        source = Path(cfg.model) if Path(cfg.model).is_dir() else None
    if cfg.freeze_vision:
        for p in model.model.visual.parameters():
            p.requires_grad_(False)
    n = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: %.2fM parameters, %.2fM trained, vocab %d", n / 1e6, n_train / 1e6, len(encoder.tokenizer))
    return model, encoder, source


def warmup_cosine(lr: float, frac: float, warmup: float) -> float:
    """The learning rate at `frac` of training: linear warmup over the first `warmup` share (from 1%
    of lr), then cosine decay to zero."""
    if frac < warmup:
        return lr * max(frac / warmup, 0.01)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warmup) / (1 - warmup))))


class TimeBudgetCallback(TrainerCallback):
    """Train for a wall-clock budget rather than a step count: the learning rate follows warmup then
    cosine decay over elapsed time (set before each optimiser step) and training stops at the budget.
    Used where a machine is lent for minutes and its speed is not known ahead. With `lr=None` the
    schedule is left alone and only the stop applies (RL's constant learning rate)."""

    def __init__(self, seconds: float, lr: float | None, warmup: float = 0.05) -> None:
        self.seconds, self.lr, self.warmup, self.t0 = seconds, lr, warmup, None

    def lr_at(self, frac: float) -> float:
        return warmup_cosine(self.lr, frac, self.warmup)

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.time()

    def on_step_begin(self, args, state, control, optimizer=None, **kw):
        if self.lr is None:
            return
        lr = self.lr_at((time.time() - self.t0) / self.seconds)
        for group in (optimizer.param_groups if optimizer is not None else []):
            group["lr"] = lr

    def on_step_end(self, args, state, control, **kw):
        if time.time() - self.t0 >= self.seconds:
            control.should_training_stop = True
            control.should_save = True


def copy_processor_files(source: Path, final: Path) -> None:
    """The start checkpoint's processor configs, chat template and studio.json, where `final` lacks them."""
    for name in PROCESSOR_FILES:
        if (source / name).exists() and not (final / name).exists():
            shutil.copy(source / name, final / name)


def save_final(trainer, encoder: VisionTextEncoder, cfg: SFTRunConfig, source: Path | None, final: Path) -> None:
    """A plain HF folder: weights, config, tokenizer, processor configs (copied from the start)."""
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


# ---- run -------------------------------------------------------------------------------------

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
    (`<out>/<name>_config.json`), so every run folder says how it was made."""
    refuse_shipped(cfg)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return out


def train(cfg: SFTRunConfig) -> dict:
    """Run SFT; returns a summary (steps, final loss, seconds, paths)."""
    from trl import SFTConfig

    out = start_run(cfg, "sft")
    records = repeat_by_category(load_sft_records(cfg.data, cfg.train_split, cfg.limit), cfg.repeat)
    eval_records = []
    if cfg.eval_split and Path(cfg.data).is_dir() and (Path(cfg.data) / f"{cfg.eval_split}.jsonl").exists():
        eval_records = load_sft_records(cfg.data, cfg.eval_split, cfg.eval_limit)
    log.info("data: %d train records, %d eval records from %s", len(records), len(eval_records), cfg.data)
    model, encoder, source = build_model(cfg, records, out)
    train_ds = row_dataset(range(len(records)))
    eval_ds = row_dataset(range(len(records), len(records) + len(eval_records))) if eval_records else None
    has_eval = eval_ds is not None
    args = SFTConfig(
        output_dir=str(out), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant" if cfg.max_seconds else cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # < 1: a ratio of the steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, bf16=cfg.bf16, activation_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if has_eval else "no", eval_steps=(cfg.eval_steps or cfg.save_steps) if has_eval else None,
        seed=cfg.seed, report_to=cfg.report_to, deepspeed=cfg.deepspeed, dataloader_num_workers=cfg.num_workers,
        disable_tqdm=cfg.disable_tqdm, remove_unused_columns=False, max_length=None, packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        use_cpu=not torch.cuda.is_available(),
    )
    # eval rows follow train rows
    collator = SFTCollator(records + eval_records, encoder, cfg.pixel_preset, cfg.grounded_weight)
    trainer = _trainer_class()(model=model, args=args, data_collator=collator, train_dataset=train_ds,
                               eval_dataset=eval_ds, processing_class=encoder.tokenizer,
                               callbacks=[MetricsJsonlCallback(out / "metrics.jsonl")])
    if cfg.max_seconds:
        trainer.add_callback(TimeBudgetCallback(cfg.max_seconds, cfg.learning_rate, cfg.warmup_ratio))
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=last_checkpoint(out))
    seconds = time.time() - t0
    final = Path(cfg.final_dir) if cfg.final_dir else out / "final"
    save_final(trainer, encoder, cfg, source, final)
    summary = {"steps": result.global_step, "train_loss": result.training_loss, "seconds": round(seconds, 1),
               "train_records": len(records), "final_dir": str(final), "metrics": str(out / "metrics.jsonl")}
    if trainer.is_world_process_zero():
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def last_checkpoint(out: Path) -> str | None:
    """Resume from the newest checkpoint-N of a previous run in the same folder."""
    ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    return str(ckpts[-1]) if ckpts else None


def load_saved_weights(model, checkpoint: str) -> None:
    """Put a checkpoint's weights into `model` the way from_pretrained reads them.

    Trainer's resume loads model.safetensors key by key, but transformers 5 saves Qwen2.5-VL under
    its legacy names (`visual.*`, `model.layers.*`): nothing matched, and a resumed run silently went
    on from its start weights. from_pretrained maps the names; the copy costs the model's size once."""
    saved = type(model).from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict())


def run_main(prog: str, doc: str, config_cls, train_fn, argv: list[str] | None) -> int:
    """The shared command line of `train sft` and `train rl`: --config FILE, --out, key=value overrides."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    ap.add_argument("--config", help=f"JSON file with {config_cls.__name__} fields")
    ap.add_argument("--out", help="output folder (overrides the config's `out`)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, values parsed as JSON when possible")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_cls.from_file(args.config, args.overrides)
    if args.out:
        cfg.out = args.out
    print(json.dumps(train_fn(cfg)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("python -m train sft", __doc__, SFTRunConfig, train, argv)
