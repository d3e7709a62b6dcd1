"""core.encoding and train.tiny: masks, pad expansion, patch layout, and real forward passes."""
from __future__ import annotations

import pytest
import torch

from core import protocol as P
from core.encoding import IGNORE_INDEX, VisionTextEncoder
from core.operations import resize_for_model
from tests.conftest import numbered_frames, photo_like

PX = 28 * 28


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint):
    return VisionTextEncoder.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()


def image_conversation() -> tuple[list[dict], list[str]]:
    """An image question with two crops, as the loop builds it (images already model-sized)."""
    view = resize_for_model(photo_like(), 4 * PX, 64 * PX)
    crop1 = resize_for_model(photo_like().crop((80, 120, 300, 260)), 4 * PX, 64 * PX)
    crop2 = resize_for_model(photo_like().crop((90, 150, 200, 230)), 4 * PX, 32 * PX)
    turns = [
        "I see a sign.\n\n" + P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.1, 0.2, 0.35, 0.4], "target_image": 1}),
        "Closer still.\n\n" + P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.1, 0.2, 0.5, 0.6], "target_image": 2}),
        "The sign reads WOOLSHOPS. \\boxed{B}",
    ]
    messages = [
        {"role": "system", "content": P.system_prompt(P.tools_for(False))},
        {"role": "user", "content": [{"type": "image", "image": view},
                                     {"type": "text", "text": P.question_text("What is on the sign?")}]},
        {"role": "assistant", "content": [{"type": "text", "text": turns[0]}]},
        {"role": "user", "content": [{"type": "text", "text": P.crop_observation(*crop1.size)},
                                     {"type": "image", "image": crop1}]},
        {"role": "assistant", "content": [{"type": "text", "text": turns[1]}]},
        {"role": "user", "content": [{"type": "text", "text": P.crop_observation(*crop2.size)},
                                     {"type": "image", "image": crop2}]},
        {"role": "assistant", "content": [{"type": "text", "text": turns[2]}]},
    ]
    return messages, turns


def video_conversation(n_frames: int = 7) -> list[dict]:
    frames = [resize_for_model(f, 4 * PX, 16 * PX) for f in numbered_frames(n_frames)]
    picked = [resize_for_model(f, 4 * PX, 24 * PX) for f in list(numbered_frames(3))]
    return [
        {"role": "system", "content": P.system_prompt(P.tools_for(True))},
        {"role": "user", "content": [{"type": "video", "video": frames, "fps": 4.0},
                                     {"type": "text", "text": P.question_text("Which number shows first?")}]},
        {"role": "assistant", "content": [{"type": "text", "text": P.format_tool_call(P.FRAMES_TOOL, {"target_frames": [1, 2]})}]},
        {"role": "user", "content": [{"type": "text", "text": P.frames_observation(*picked[0].size, 2, 4)}]
         + [{"type": "image", "image": im} for im in picked]},
        {"role": "assistant", "content": "It is 0. \\boxed{0}"},
    ]


def labelled_text(encoder, enc) -> str:
    return encoder.tokenizer.decode([t for t, m in zip(enc.input_ids, enc.assistant_mask) if m],
                                    skip_special_tokens=False)


def test_chat_template_renders_like_render_prompt(encoder):
    messages, _ = image_conversation()
    for gen in (False, True):
        assert encoder.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen) == \
            P.render_prompt(messages, add_generation_prompt=gen)
    no_system = messages[1:3]
    assert encoder.tokenizer.apply_chat_template(no_system, tokenize=False) == P.render_prompt(no_system, False)


def test_chat_template_is_trls_qwen2_5_vl_template():
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    from train.tiny import CHAT_TEMPLATE

    assert CHAT_TEMPLATE == qwen2_5_vl_chat_template


def test_tool_call_tokens_survive_skip_special(encoder):
    text = P.format_tool_call(P.CROP_TOOL, {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1})
    ids = encoder.tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert encoder.tokenizer.convert_tokens_to_ids("</tool_call>") in ids
    assert encoder.tokenizer.decode(ids, skip_special_tokens=True) == text


def test_mask_covers_exactly_the_assistant_turns(encoder):
    messages, turns = image_conversation()
    enc = encoder.encode(messages)
    assert len(enc.assistant_mask) == len(enc.input_ids)
    assert labelled_text(encoder, enc) == "".join(t + P.IM_END for t in turns)
    masked_out = encoder.tokenizer.decode([t for t, m in zip(enc.input_ids, enc.assistant_mask) if not m])
    for foreign in ("You are a helpful assistant", "What is on the sign?", "Here is the cropped image", "Guidelines"):
        assert foreign not in labelled_text(encoder, enc)
        assert foreign in masked_out
    assert all(m == 0 for t, m in zip(enc.input_ids, enc.assistant_mask) if t == encoder.image_token_id)


def test_train_turns_select_assistant_messages(encoder):
    messages, turns = image_conversation()
    enc = encoder.encode(messages, train_turns=[False, True, False])
    assert labelled_text(encoder, enc) == turns[1] + P.IM_END
    assert sum(encoder.encode(messages, train_turns=[False] * 3).assistant_mask) == 0
    with pytest.raises(ValueError, match="train_turns has 2 entries for 3"):
        encoder.encode(messages, train_turns=[True, True])


def test_image_pads_expand_to_the_vision_token_count(encoder):
    messages, _ = image_conversation()
    enc = encoder.encode(messages)
    images, _ = P.media_in(messages)
    # not resized again: the grid is the image's own size in 14-px patches
    assert enc.image_grid_thw.tolist() == [[1, im.height // 14, im.width // 14] for im in images]
    expected = sum(im.width * im.height // PX for im in images)
    assert enc.input_ids.count(encoder.image_token_id) == expected
    assert enc.pixel_values.shape == (expected * 4, 3 * 2 * 14 * 14)


def test_video_patchify_matches_the_image_processor_layout(encoder):
    """A one-frame video (padded to two) must give the HF image processor's exact patches."""
    image = resize_for_model(photo_like(), 4 * PX, 16 * PX)
    patches, grid = encoder.patchify_video([image])
    pixel_values, image_grid = encoder.encode_images([image])
    assert grid == image_grid[0].tolist()
    assert torch.allclose(torch.from_numpy(patches), pixel_values, atol=1e-5)


def test_video_frames_padded_to_even_and_resized_to_one_size(encoder):
    messages = video_conversation(n_frames=7)
    enc = encoder.encode(messages)
    frames = messages[1]["content"][0]["video"]
    w, h = frames[0].size
    assert enc.video_grid_thw.tolist() == [[4, h // 14, w // 14]]  # 7 frames -> 8 -> grid_t 4
    assert enc.input_ids.count(encoder.video_token_id) == 4 * h * w // PX
    assert enc.second_per_grid_ts.tolist() == [0.5]  # 2 frames per temporal patch at 4 fps
    odd = frames[:2] + [frames[2].resize((w + 28, h))]  # a frame of another size is brought to the first's
    patches, grid = encoder.patchify_video(odd)
    assert grid == [2, h // 14, w // 14] and patches.shape[0] == 2 * (h // 14) * (w // 14)


def test_collate_pads_and_labels(encoder):
    messages, _ = image_conversation()
    a, b = encoder.encode(messages), encoder.encode(messages[:3])
    right = encoder.collate([a, b])
    n = len(b)
    assert right["attention_mask"][1, :n].all() and not right["attention_mask"][1, n:].any()
    assert (right["labels"][1, n:] == IGNORE_INDEX).all()
    assert (right["input_ids"][1, n:] == encoder.pad_token_id).all()
    left = encoder.collate([a, b], pad_left=True)
    assert not left["attention_mask"][1, :len(a) - n].any() and left["attention_mask"][1, len(a) - n:].all()
    labelled = left["labels"][0] != IGNORE_INDEX
    assert left["labels"][0][labelled].tolist() == [t for t, m in zip(a.input_ids, a.assistant_mask) if m]
    assert (left["mm_token_type_ids"] == 1).sum() == a.input_ids.count(encoder.image_token_id) + \
        b.input_ids.count(encoder.image_token_id)
    assert right["image_grid_thw"].shape[0] == 3 + 1


def test_literal_pad_token_in_text_is_refused(encoder):
    messages = [{"role": "user", "content": [{"type": "text", "text": "look <|image_pad|> here"}]}]
    with pytest.raises(ValueError, match="1 <\\|image_pad\\|> tokens but 0 images"):
        encoder.encode(messages)


def test_unsized_image_is_resized_by_the_processor_policy(encoder):
    messages = [{"role": "user", "content": [{"type": "image", "image": photo_like(100, 61)},
                                             {"type": "text", "text": "hi"}]}]
    enc = encoder.encode(messages, add_generation_prompt=True)
    t, h, w = enc.image_grid_thw[0].tolist()
    assert (h * 14) % 28 == 0 and (w * 14) % 28 == 0
    assert enc.input_ids.count(encoder.image_token_id) == h * w // 4


def test_forward_pass_accepts_image_conversation_with_two_crops(encoder, model):
    messages, _ = image_conversation()
    batch = encoder.collate([encoder.encode(messages)])
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(out.loss) and out.loss.item() > 0


def test_forward_pass_accepts_video_conversation(encoder, model):
    batch = encoder.collate([encoder.encode(video_conversation())])
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(out.loss)


def test_left_padding_does_not_change_the_next_token_logits(encoder, model):
    """Generation pads on the left: the padded row must predict what it predicts alone."""
    messages, _ = image_conversation()
    short = encoder.encode(messages[:2], add_generation_prompt=True)
    long = encoder.encode(messages[:4], add_generation_prompt=True)
    batch = encoder.collate([short, long], pad_left=True)
    batch.pop("labels")
    alone = encoder.collate([short], pad_left=True)
    alone.pop("labels")
    with torch.no_grad():
        padded = model(**batch).logits[0, -1]
        single = model(**alone).logits[0, -1]
    assert torch.allclose(padded, single, atol=1e-4)


def test_checkpoint_folder_is_complete(tiny_checkpoint):
    import json

    names = {p.name for p in tiny_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json",
            "video_preprocessor_config.json", "generation_config.json", "studio.json"} <= names
    assert json.loads((tiny_checkpoint / "studio.json").read_text()) == {"pixel_preset": "tiny"}
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["vision_config"]["out_hidden_size"] == config["text_config"]["hidden_size"]


def test_tiny_config_overrides_keep_the_model_consistent():
    from transformers import Qwen2_5_VLForConditionalGeneration

    from train.tiny import build_tokenizer, tiny_config

    tok = build_tokenizer(["zoom in on the sign " * 4, "\\boxed{A}"], vocab_size=400)
    config = tiny_config(tok, hidden_size=128, vision_depth=1)
    assert config.text_config.rope_parameters["mrope_section"] == [4, 6, 6]  # sums to head_dim / 2
    assert config.vision_config.out_hidden_size == 128 and config.vision_config.fullatt_block_indexes == [0]
    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    model = Qwen2_5_VLForConditionalGeneration(config)
    ids = torch.tensor([tok("zoom in", add_special_tokens=False)["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))


def test_each_picture_is_processed_once_and_patches_match_the_processor(encoder):
    a = resize_for_model(photo_like(), 4 * PX, 16 * PX)
    b = resize_for_model(photo_like(seed=3), 4 * PX, 8 * PX)
    direct = encoder.image_processor(images=[a, b, a], do_resize=False, return_tensors="pt")
    pixels, grid = encoder.encode_images([a, b, a])
    assert torch.equal(pixels, direct["pixel_values"]) and torch.equal(grid, direct["image_grid_thw"])
    calls = []
    processor = encoder.image_processor
    encoder.image_processor = lambda **kw: calls.append(kw) or processor(**kw)
    try:
        again, _ = encoder.encode_images([b, a])
    finally:
        encoder.image_processor = processor
    assert not calls and torch.equal(again, torch.cat(pixels.split(grid.prod(-1).tolist())[:2][::-1]))
