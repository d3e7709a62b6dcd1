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

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from core import protocol as P
from core.encoding import IGNORE_INDEX, VisionTextEncoder
from core.operations import PIXEL_PRESETS
from core.records import (DataError, SFTRecord, load_sft_records, newest_dataset, record_answer, record_to_messages,
                          repeat_by_category)
from train.familiarity import record_pictures
from train.grounding import token_weights
from train.metrics import MetricsJsonlCallback
from train.mix import FRESH, mix_in
from train.run import (ResumesSavedWeights, SaveEveryMinutes, TimeBudgetCallback, TrainerRunConfig, native_bf16,
                       option, refuse_shipped, run_main, save_final, start_run, train_or_finish)
from train.processes import planned_processes
from train.shared_prefix import route_through_forward

log = logging.getLogger(__name__)

@dataclass
class SFTRunConfig(TrainerRunConfig):
    data: str = option("data/tinyzoom", "a dataset folder (<split>.jsonl) or a .jsonl/.json file")
    train_split: str = option("train", "the split trained on")
    eval_split: str | None = option("validation", "the split whose loss is evaluated (when the folder has it)")
    limit: int | None = option(None, "use the first N training records")
    mix_data: str | None = option(None, "a TinyZoom-format folder of the model's original kind of data whose train.jsonl "
                                        "records are mixed in (train/mix.py); built first ({train} train, {test} test, "
                                        "seed {seed}) when it does not exist; null: no mixing".format(**FRESH))
    mix_records: int = option(0, "how many of mix_data's training records to mix in, drawn with the run's seed (all "
                                 "of them when it has fewer); 0: none")
    repeat: dict = option(help="category -> times its records appear, e.g. {\"zoom_optional\": 3, \"closeup\": 0.3}",
                          factory=dict)
    grounded_weight: float = option(1.0, "loss weight of the tokens the picture decides (train.grounding); 1: plain SFT")
    eval_limit: int | None = option(64, "evaluate on the first N records of the eval split")
    model: str = option("tiny", "\"tiny\" (a fresh tiny model, tokenizer trained on the records), a local "
                                "checkpoint folder, or a hub id")
    tiny: dict = option(help="train.tiny.tiny_config overrides (vision_* for the tower)", factory=dict)
    vocab_size: int = option(2000, "the fresh tiny model's tokenizer size")
    pixel_preset: str = option("tiny", "core.operations.PIXEL_PRESETS: how record images are sized")
    freeze_vision: bool = False
    fast: bool = option(True, "the fast forward (train/shared_prefix.py): the system/tool prefix rows share runs once "
                              "per batch and rows run in length groups without padding; the same loss and gradients")
    processes: int | None = option(None, "on a CPU, training processes (gloo DDP ranks, train/processes.py) that share "
                                         "each batch equally, the cores shared out among them; the global batch stays "
                                         "batch_size. null: the most that give each rank >= 4 rows, at most one per "
                                         "core (2 on 2 cores at batch 8); 1: one process. A GPU run, or one inside "
                                         "torchrun/accelerate launch (batch_size per process there), is not split")
    bf16: bool | None = option(None, "bf16 autocast with fp32 master weights; null (default): on where the hardware "
                                     "computes bf16 natively (a CUDA GPU with bf16, a CPU with avx512_bf16 or AMX)")
    save_minutes: float | None = option(10.0, "also save a resumable checkpoint (weights, optimizer, scheduler, data "
                                              "position, RNG) every N minutes of training; null: by save_steps only")
    out: str = "runs/sft_tiny"
    epochs: float = 3.0
    eval_steps: int | None = option(None, "evaluate every N steps (None: at each save)")
    num_workers: int = option(0, "data loader processes")


# ---- data ------------------------------------------------------------------------------------

class SFTCollator:
    """Encodes the batch's records on the fly (images loaded and sized by the preset) and pads it
    on the right; `labels` are -100 off the trained assistant tokens. With a grounded weight other
    than 1 the batch also carries `loss_weights` (one per token) for the trainer's weighted loss.

    The trainer's dataset holds only row numbers (TRL wants an HF Dataset; the records, with their
    image paths, stay here), so no pixels are materialised before they are needed.
    """

    def __init__(self, records: list[SFTRecord], encoder: VisionTextEncoder, pixel_preset: str,
                 grounded_weight: float = 1.0) -> None:
        self.records, self.encoder, self.limits = records, encoder, PIXEL_PRESETS[pixel_preset]
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


def _trainer_class():
    from trl import SFTTrainer

    class WeightedSFTTrainer(ResumesSavedWeights, SFTTrainer):
        """SFTTrainer whose loss weighs each trained token by the batch's `loss_weights`.

        The same sum over trained tokens divided by their count as TRL's own loss (so a weight of 1 is
        plain SFT and gradient accumulation is unchanged), only scaled per token. Evaluation
        (return_outputs) and unweighted batches take TRL's path, with its entropy and accuracy metrics.
        """

        fast = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.fast and not return_outputs:
                return self.fast_loss(model, inputs, num_items_in_batch)
            weights = inputs.pop("loss_weights", None)
            if weights is None or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            outputs = model(**inputs, use_cache=False, fused_lm_head=True)  # log_probs of labels[:, 1:]
            mask = outputs.label_mask
            weighted = -(outputs.log_probs * weights[:, 1:].to(outputs.log_probs) * mask).sum()
            return self.per_token(weighted, mask.sum(), num_items_in_batch)

        def fast_loss(self, model, inputs, num_items_in_batch):
            """The same weighted sum over trained tokens, from train.shared_prefix's forward (through the
            model's forward, so a DDP wrapper syncs the gradients: route_through_forward)."""
            with self.accelerator.autocast():
                out = model(fast_batch=inputs)
            weighted = -(out.log_probs * out.weights.to(out.log_probs)).sum()
            return self.per_token(weighted, torch.tensor(out.log_probs.numel()), num_items_in_batch)

        def per_token(self, weighted, count, num_items_in_batch):
            """`weighted` over the trained tokens of the whole batch. Trainer counts them only for models
            that take loss kwargs (not Qwen2.5-VL); without its count, a distributed run sums the ranks'
            counts here. DDP averages the ranks' gradients, hence the factor: the step is the one a single
            process takes over the whole batch, not the mean of the ranks' own means."""
            ranks = self.accelerator.num_processes // self.get_tp_size()
            if num_items_in_batch is not None:
                count = num_items_in_batch
                ranks = ranks if self.args.average_tokens_across_devices else 1  # as TRL
            elif ranks > 1:
                count = self.accelerator.reduce(count.detach().to(torch.float64), "sum")
            return weighted / torch.as_tensor(count).clamp(min=1) * ranks

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

def build_model(cfg: SFTRunConfig, records: list[SFTRecord], out: Path, main: bool = True):
    """(model, encoder, source_dir): the tiny model from scratch, or a checkpoint to fine-tune.
    In a distributed run only the main process builds `<out>/init`; the others load it."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    if cfg.model == "tiny" and not main:
        source = out / "init"
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
        encoder = VisionTextEncoder.from_pretrained(source)
    elif cfg.model == "tiny":
        from train.tiny import build_tokenizer, save_checkpoint, tiny_config

        tokenizer = build_tokenizer(corpus_texts(records), vocab_size=cfg.vocab_size)
        torch.manual_seed(cfg.seed)
        model = Qwen2_5_VLForConditionalGeneration(tiny_config(tokenizer, **cfg.tiny))
        source = save_checkpoint(model, tokenizer, out / "init", pixel_preset=cfg.pixel_preset)
        encoder = VisionTextEncoder.from_pretrained(source)
        log.info("start checkpoint built: %s", source)
    else:
        kwargs = {"dtype": torch.float32}  # fp32 master weights; bf16=true trains under autocast (or DeepSpeed's bf16)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(cfg.model, **kwargs)
        encoder = VisionTextEncoder.from_pretrained(cfg.model)
        source = Path(cfg.model) if Path(cfg.model).is_dir() else None
    attn = cfg.attn_implementation or ("eager" if cfg.fast and not torch.cuda.is_available() else None)
    if attn:
        model.set_attn_implementation(attn)  # on CPU: bf16 SDPA's backward measured 1.5x slower than fp32's
    if cfg.fast:
        route_through_forward(model)
    if cfg.freeze_vision:
        for p in model.model.visual.parameters():
            p.requires_grad_(False)
    n = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: %.2fM parameters, %.2fM trained, vocab %d", n / 1e6, n_train / 1e6, len(encoder.tokenizer))
    return model, encoder, source


def train(cfg: SFTRunConfig) -> dict:
    """Run SFT; returns a summary (steps, final loss, seconds, paths)."""
    from trl import SFTConfig

    refuse_shipped(cfg)  # before anything else is read: a run into assets/ is refused whatever its data
    try:
        cfg.data = str(newest_dataset(cfg.data, cfg.train_split))
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    out = start_run(cfg, "sft")
    bf16 = native_bf16() if cfg.bf16 is None else cfg.bf16
    records = repeat_by_category(load_sft_records(cfg.data, cfg.train_split, cfg.limit), cfg.repeat)
    try:
        records, mixed = mix_in(records, cfg.mix_data, cfg.mix_records, cfg.seed)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    eval_records = []
    if cfg.eval_split and Path(cfg.data).is_dir() and (Path(cfg.data) / f"{cfg.eval_split}.jsonl").exists():
        eval_records = load_sft_records(cfg.data, cfg.eval_split, cfg.eval_limit)
    log.info("data: %d train records (%d of them mixed in from %s), %d eval records from %s", len(records), mixed,
             cfg.mix_data, len(eval_records), cfg.data)
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
        max_grad_norm=cfg.max_grad_norm, bf16=bf16, activation_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if has_eval else "no", eval_steps=(cfg.eval_steps or cfg.save_steps) if has_eval else None,
        seed=cfg.seed, report_to=cfg.report_to, deepspeed=cfg.deepspeed, dataloader_num_workers=cfg.num_workers,
        disable_tqdm=cfg.disable_tqdm, remove_unused_columns=False, max_length=None, packing=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        use_cpu=not torch.cuda.is_available(), ddp_find_unused_parameters=False,
        restore_callback_states_from_checkpoint=True,  # the time budget left (TimeBudgetCallback)
    )
    with args.main_process_first(desc="building the start checkpoint"):  # <out>/init once, by rank 0
        model, encoder, source = build_model(cfg, records, out, main=args.process_index == 0)
    # eval rows follow train rows
    collator = SFTCollator(records + eval_records, encoder, cfg.pixel_preset, cfg.grounded_weight)
    trainer = _trainer_class()(model=model, args=args, data_collator=collator, train_dataset=train_ds,
                               eval_dataset=eval_ds, processing_class=encoder.tokenizer,
                               callbacks=[MetricsJsonlCallback(out / "metrics.jsonl")])
    trainer.fast = cfg.fast
    if cfg.max_seconds:
        trainer.add_callback(TimeBudgetCallback(cfg.max_seconds, cfg.learning_rate, cfg.warmup_ratio))
    if cfg.save_minutes:
        trainer.add_callback(SaveEveryMinutes(cfg.save_minutes))
    log.info("fast forward %s, bf16 autocast %s, %d process(es) of %d thread(s), batch %d each, a checkpoint every %s "
             "min", "on" if cfg.fast else "off", "on" if bf16 else "off", args.world_size, torch.get_num_threads(),
             cfg.batch_size, cfg.save_minutes)
    t0 = time.time()
    steps, loss = train_or_finish(trainer, out, cfg.max_steps)
    seconds = time.time() - t0
    final = Path(cfg.final_dir) if cfg.final_dir else out / "final"
    save_final(trainer, encoder, cfg, source, final, pictures=record_pictures(records))
    summary = {"steps": steps, "train_loss": loss, "seconds": round(seconds, 1), "processes": args.world_size,
               "train_records": len(records), "mixed_records": mixed, "final_dir": str(final),
               "metrics": str(out / "metrics.jsonl")}
    if trainer.is_world_process_zero():
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_main("python -m train sft", __doc__, SFTRunConfig, train, argv, split=cpu_ranks)


def cpu_ranks(cfg: SFTRunConfig) -> int:
    """How many processes the command runs as (train/processes.py)."""
    return planned_processes(cfg.processes, cfg.batch_size, on_gpu=torch.cuda.is_available())
