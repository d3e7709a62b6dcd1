"""SFT: loss masks (decoded labels hold only trained assistant text) and a few real training steps."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.encoding import IGNORE_INDEX, VisionTextEncoder
from core.media import DiskImageStore
from core.records import DataError, load_sft_records, record_answer, trajectory_to_sft_record
from train.synth.build import BuildConfig, build
from train.synth.tasks import make_item
from train.synth.traces import Trace, crop_call, item_task, make_trace, run_trace

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A handful of real synthetic records (all categories, one correction trace, one error turn)."""
    root = tmp_path_factory.mktemp("sftdata")
    build(BuildConfig(out=str(root), train=10, validation=2, test=0, seed=1, correction_rate=0.0))
    store = DiskImageStore(root / "images")
    rows = []
    item = make_item("zoom_needed", 11, "corr")
    trace = make_trace(item, np.random.default_rng(2), correction_rate=1.0)
    traj = run_trace(item_task(item), trace, store)
    rows.append(trajectory_to_sft_record(traj, store, trace.train_turns, relative_to=root))
    # an execution error (a box inverted beyond its padding) fed back, then a correct crop; the failed turn is masked
    item = make_item("zoom_needed", 12, "err")
    good = crop_call([round(v, 2) for v in item.target])
    turns = [f"I will zoom in.\n\n{crop_call([0.6, 0.6, 0.2, 0.2])}", f"Again.\n\n{good}", f"\\boxed{{{item.answer}}}"]
    traj = run_trace(item_task(item), Trace("correction", turns, [False, True, True]), store)
    assert traj.steps[0].error
    rows.append(trajectory_to_sft_record(traj, store, [False, True, True], relative_to=root))
    with (root / "train.jsonl").open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return root


def labelled_text(encoder: VisionTextEncoder, batch: dict, row: int) -> str:
    ids = [t for t in batch["labels"][row].tolist() if t != IGNORE_INDEX]
    return encoder.tokenizer.decode(ids)


def test_labels_hold_only_trained_assistant_text(dataset, tiny_checkpoint):
    from train.sft import SFTCollator

    records = load_sft_records(dataset)
    encoder = VisionTextEncoder.from_pretrained(tiny_checkpoint)
    collator = SFTCollator(records, encoder, "tiny")
    batch = collator([{"row": i} for i in range(len(records))])
    assert batch["labels"].shape == batch["input_ids"].shape
    for i, rec in enumerate(records):
        text = labelled_text(encoder, batch, i)
        for banned in ("Here is the cropped image", "Here are the selected frames", "Execution error",
                       "You are a helpful assistant", "Guidelines", "<|im_start|>", "user\n", "<|image_pad|>",
                       "<|video_pad|>", rec.meta.get("question", "@@@") if rec.meta.get("question") else "@@@"):
            assert banned not in text, f"{rec.id}: {banned!r} is labelled"
        assistant = [m["content"][0]["text"] for m in rec.messages if m["role"] == "assistant"]
        flags = rec.train_turns or [True] * len(assistant)
        for turn, trained in zip(assistant, flags):
            if trained:
                assert turn in text, f"{rec.id}: trained turn missing from labels"
            else:
                assert turn not in text, f"{rec.id}: masked (erroneous) turn is labelled"
        assert text.count("<|im_end|>") == sum(flags)  # each trained turn ends with its stop token
    assert any(r.train_turns and not r.train_turns[0] for r in records)


def test_sft_few_steps_then_the_loop_runs_it(dataset, tmp_path):
    from core.backends.hf import TransformersBackend
    from core.backends.base import GenerationParams
    from core.loop import run_to_end
    from train.sft import SFTRunConfig, train
    from train.synth.traces import loop_config

    cfg = SFTRunConfig(data=str(dataset), out=str(tmp_path / "run"), max_steps=6, batch_size=2, logging_steps=1,
                       save_steps=3, eval_limit=2, learning_rate=3e-3, report_to=[], disable_tqdm=True,
                       vocab_size=600, grounded_weight=3.0)
    summary = train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r and "train_runtime" not in r]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert all(isinstance(r["step"], int) and isinstance(r["time"], float) for r in rows)
    assert min(losses[-2:]) < losses[0], f"loss did not decrease: {losses}"
    assert any("eval_loss" in r for r in rows)
    final = tmp_path / "run" / "final"
    assert summary["final_dir"] == str(final) and (final / "model.safetensors").exists()
    for name in ("preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json", "studio.json"):
        assert (final / name).exists(), name

    # Run again in the same folder: it resumes from checkpoint-6 with nothing left to do, so the final
    # weights must be checkpoint-6's, not a fresh start's (Trainer's own loader matched no key there).
    trained = load_file(final / "model.safetensors")
    train(cfg)
    resumed = load_file(final / "model.safetensors")
    assert resumed.keys() == trained.keys() and all(torch.equal(resumed[k], trained[k]) for k in trained)

    backend = TransformersBackend(str(final))
    item = make_item("zoom_needed", 99, "gen")
    traj = run_to_end(backend, item_task(item), config=loop_config(), params=GenerationParams(max_new_tokens=24))
    assert traj.steps and traj.status in ("done", "max_tokens", "max_ops")


def test_token_kinds_tell_box_tenths_by_axis_frames_and_the_answer():
    from train.grounding import token_kinds, token_weights

    pieces = (["Zoom.", "<tool_call>", '\n{"name": "crop_image_normalized", "arguments": {"', "bbox", '_2d":', " ["]
              + ["0", ".", "5", "4", ",", " ", "0", ".", "6", "6", ",", " ", "0", ".", "6", "9", ",", " ", "0", ".", "7", "1"]
              + ["],", ' "target_image":', " ", "1", "}}", "</tool_call>", "The tag reads", " K", "."])
    kinds = dict(zip(range(len(pieces)), token_kinds(pieces, "K")))
    tenths = [(pieces[i], k) for i, k in kinds.items() if k in ("box_x", "box_y")]
    assert tenths == [("5", "box_x"), ("6", "box_y"), ("6", "box_x"), ("7", "box_y")]
    assert sum(k == "box" for k in kinds.values()) == 12  # 0 . and hundredths; target_image's 1 is not the box
    assert kinds[pieces.index(" K")] == "answer"
    assert token_weights(pieces, "K", 4.0).count(4.0) == 5
    split = [q for p in pieces for q in (["_", "2", 'd":'] if p == '_2d":' else [p])]  # the tokenizer may split it
    assert token_kinds(split, "2")[split.index("2")] == "template"  # bbox_2d's 2 is not the answer 2
    # a video trace: the frames named in the sentence and in the call; the answer turn's digit is the answer
    pieces = (["The sign appears in frames", " ", "10", " to", " ", "12", ".", "<tool_call>",
               '\n{"name": "select_frames", "arguments": {"target_frames": [', "10", ",", " ", "11", "]}}",
               "</tool_call>", "<|im_end|>", "The sign reads", " ", "7", ".", " \\boxed{", "7", "}", "<|im_end|>"])
    kinds = token_kinds(pieces, "7")
    assert [p for p, k in zip(pieces, kinds) if k == "frames"] == ["10", "12", "10", "11"]
    assert [i for i, k in enumerate(kinds) if k == "answer"] == [pieces.index("7")]


def test_rerunning_a_finished_sft_run_takes_no_step_past_max_steps(dataset, tmp_path):
    """Mid-epoch, Trainer resumed from the last checkpoint took one step more than max_steps
    (and saved it); a rerun of a finished run now only takes its last weights."""
    from train.sft import SFTRunConfig, train

    cfg = SFTRunConfig(data=str(dataset), out=str(tmp_path / "run"), max_steps=2, batch_size=2, save_steps=2,
                       eval_limit=0, report_to=[], disable_tqdm=True, vocab_size=600)
    assert train(cfg)["steps"] == 2
    again = train(cfg)
    assert again["steps"] == 2 and again["train_loss"] is None
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2"]


def test_both_trainers_resume_a_checkpoint_under_the_names_transformers_saves(tiny_checkpoint, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from train.rl import _trainer_class as rl_trainer
    from train.sft import _trainer_class as sft_trainer

    saved = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    saved.save_pretrained(tmp_path / "checkpoint-1")
    on_disk = load_file(tmp_path / "checkpoint-1" / "model.safetensors")
    for trainer_cls in (sft_trainer(), rl_trainer()):
        model = Qwen2_5_VLForConditionalGeneration(saved.config)
        # what Trainer's own resume does: of the legacy names on disk only lm_head's matches the model's
        missing, _ = model.load_state_dict(on_disk, strict=False)
        assert [k for k in model.state_dict() if k not in missing] == ["lm_head.weight"]
        trainer_cls._load_from_checkpoint(None, str(tmp_path / "checkpoint-1"), model)  # the path resume takes
        assert all(torch.equal(v, saved.state_dict()[k]) for k, v in model.state_dict().items())


def test_the_collator_weighs_the_grounded_tokens_and_the_weighted_loss_is_trls_at_weight_one(dataset, tiny_checkpoint,
                                                                                           tmp_path):
    from trl import SFTConfig
    from transformers import Qwen2_5_VLForConditionalGeneration

    from train.sft import SFTCollator, _trainer_class, row_dataset

    records = [r for r in load_sft_records(dataset) if r.id.endswith(("zoom_needed", "video"))][:4]
    encoder = VisionTextEncoder.from_pretrained(tiny_checkpoint)
    batch = SFTCollator(records, encoder, "tiny", grounded_weight=4.0)([{"row": i} for i in range(len(records))])
    weights = batch["loss_weights"]
    assert weights.shape == batch["labels"].shape and set(weights.unique().tolist()) == {1.0, 4.0}
    assert not (weights[batch["labels"] == IGNORE_INDEX] != 1).any()  # only trained tokens are weighed
    for row, rec in enumerate(records):
        heavy = encoder.tokenizer.decode(batch["labels"][row][weights[row] == 4.0].tolist()).replace(" ", "")
        answer = record_answer(rec)
        assert heavy.endswith(answer), (rec.id, heavy)  # box tenths or frame numbers, then the answer
        assert len(heavy) >= 4, (rec.id, heavy)

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, remove_unused_columns=False,
                     max_length=None, dataset_kwargs={"skip_prepare_dataset": True})
    trainer = _trainer_class()(model=model, args=args, data_collator=None, train_dataset=row_dataset(range(4)),
                               processing_class=encoder.tokenizer)
    plain = {k: v for k, v in batch.items() if k != "loss_weights"}
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(plain))
        ones = trainer.compute_loss(model, {**plain, "loss_weights": torch.ones_like(weights)})
        heavier = trainer.compute_loss(model, dict(batch))
    assert torch.allclose(ones, trl_loss, rtol=1e-5)
    assert heavier > ones  # each weighed token adds three more times its loss


def test_repeat_by_category_reweights_the_mix_and_the_config_takes_it_from_the_command_line():
    from core.records import SFTRecord, record_category, repeat_by_category
    from train.sft import SFTRunConfig

    def rec(i: int, meta: dict) -> SFTRecord:
        return SFTRecord(id=str(i), messages=[], meta=meta)

    records = ([rec(i, {"task": {"category": "zoom_optional"}}) for i in range(4)]
               + [rec(10 + i, {"category": "closeup"}) for i in range(4)] + [rec(20, {})])
    assert [record_category(r) for r in records[3:5] + records[-1:]] == ["zoom_optional", "closeup", "other"]
    cfg = SFTRunConfig.from_file(None, ['repeat={"zoom_optional": 2.5, "closeup": 0.5}'])
    mixed = repeat_by_category(records, cfg.repeat)
    ids = [r.id for r in mixed]
    assert sorted(ids) == sorted(["0", "1", "2", "3"] * 2 + ["0", "1"] + ["10", "11"] + ["20"])
    assert repeat_by_category(records, {}) == records and repeat_by_category(records, {"closeup": 0}) == records[:4] + records[-1:]
    interleaved = [records[0], records[4], records[1], records[5], records[8]]  # each pass keeps the order
    assert [r.id for r in repeat_by_category(interleaved, {"zoom_optional": 1.5})] == ["0", "10", "1", "11", "20", "0"]
    with pytest.raises(DataError, match="lacks: read .*it has: closeup, other, zoom_optional"):
        repeat_by_category(records, {"read": 0.3})  # close-ups were once called "read": say so, not mix silently
