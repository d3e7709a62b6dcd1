"""The prompt and tool-call format must match what the released checkpoint saw, byte for byte."""
import json

from hypothesis import given, settings, strategies as st
from PIL import Image

from core import protocol as P
from core.loop import Episode, LoopConfig, Task

# The complete rendered prompt kept in the release's own code (reference file, section 2).
GOLDEN = (
    "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with "
    "the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "crop_image_normalized", "description": "Zoom in on the image based on '
    'the bounding box coordinates. It is useful when the object or text in the image is too small to be seen.", '
    '"parameters": {"type": "object", "properties": {"bbox_2d": {"type": "array", "description": "coordinates for '
    'bounding box of the area you want to zoom in. minimum value is 0 and maximum value is 1.", "items": {"type": '
    '"number"}}, "target_image": {"type": "number", "description": "The index of the image to crop. Index from 1 to '
    'the number of images. Choose 1 to operate on original image."}}, "required": ["bbox_2d", "target_image"]}}}\n'
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
    "</tool_call><|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><image>\nWhat animal is "
    "depicted on the Woolshops Shopping Centre sign?\nchoices:\nA: Lion  \nB: Sheep  \nC: Tiger  \nD: Elephant\n\n"
    "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
)

# The released model's own example output (reference file, section 2).
RELEASED_OUTPUT = (
    "The image shows a street with cobblestone pavements, shops, and a signboard for Woolshops Shopping Centre on the "
    "left side. The signboard has an animal depicted on it.\n\nTo identify the animal on the sign, I will zoom in on "
    "the Woolshops Shopping Centre sign.\n\n<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": "
    "{\"bbox_2d\": [0.1, 0.2, 0.3, 0.4], \"target_image\":1}}\n</tool_call>"
)


def test_golden_prompt_is_reproduced_exactly():
    task = Task(question="<image>\nWhat animal is depicted on the Woolshops Shopping Centre sign?",
                choices=["Lion  ", "Sheep  ", "Tiger  ", "Elephant"], image=Image.new("RGB", (64, 64)))
    episode = Episode(task, LoopConfig(guideline="default", prompt_variant="legacy"))
    assert P.render_prompt(episode.messages) == GOLDEN


def test_rl_variant_tools_block_and_vcot_guideline():
    task = Task(question="Q?", image=Image.new("RGB", (64, 64)))
    prompt = P.render_prompt(Episode(task, LoopConfig()).messages)
    assert "Values should be within [0.0,1.0]." in prompt
    assert '"name": "select_frames"' not in prompt  # images get the crop tool only
    assert prompt.endswith("Q?" + P.GUIDELINES["vcot"] + "<|im_end|>\n<|im_start|>assistant\n")


def test_video_prompt_has_video_pad_and_both_tools(video_path):
    from core.media import Video
    task = Task(question="Q?", video=Video.from_file(video_path))
    prompt = P.render_prompt(Episode(task, LoopConfig()).messages)
    assert "<|vision_start|><|video_pad|><|vision_end|>Q?" in prompt
    assert '"name": "select_frames"' in prompt and '"description": "Frame index from 1 to 16."' in prompt


def test_tools_off_uses_notool_guideline_without_tools_block():
    task = Task(question="Q?", image=Image.new("RGB", (64, 64)))
    prompt = P.render_prompt(Episode(task, LoopConfig(tools=False)).messages)
    assert "# Tools" not in prompt and P.GUIDELINES["notool"] in prompt


def test_parse_released_output():
    call = P.parse_tool_call(RELEASED_OUTPUT)
    assert call.name == "crop_image_normalized"
    assert call.arguments == {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1}
    assert P.has_tool_call(RELEASED_OUTPUT)


def test_parse_takes_the_last_block_and_accepts_aliases():
    text = P.format_tool_call("crop_image", {"bbox_2d": [0, 0, .5, .5], "target_image": 1}) + " then " + \
        P.format_tool_call("zoom_in", {"bbox_2d": [.1, .1, .2, .2], "target_image": 2})
    call = P.parse_tool_call(text)
    assert call.name == "zoom_in" and call.arguments["target_image"] == 2


def test_parse_errors_have_model_facing_messages():
    import pytest
    cases = {
        "<tool_call>\n{not json}\n</tool_call>": "Invalid JSON",
        "<tool_call>\n[1, 2]\n</tool_call>": "JSON object",
        '<tool_call>\n{"arguments": {}}\n</tool_call>': '"name"',
        '<tool_call>\n{"name": "rotate", "arguments": {}}\n</tool_call>': "Unknown tool `rotate`",
        '<tool_call>\n{"name": "crop_image", "arguments": 3}\n</tool_call>': '"arguments" must be',
        "no call here": "No <tool_call>",
    }
    for text, fragment in cases.items():
        with pytest.raises(P.ToolCallError, match=fragment.replace("[", r"\[")):
            P.parse_tool_call(text)


def test_double_encoded_arguments_are_accepted():
    text = '<tool_call>\n{"name": "select_frames", "arguments": "{\\"target_frames\\": [1, 2]}"}\n</tool_call>'
    assert P.parse_tool_call(text).arguments == {"target_frames": [1, 2]}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parser_fuzz_never_raises_anything_but_toolcallerror(body):
    for text in (body, f"<tool_call>{body}</tool_call>", f"x<tool_call>\n{body}"):
        try:
            call = P.parse_tool_call(text)
        except P.ToolCallError as e:
            assert str(e)
        else:
            assert call.name in P.TOOL_NAMES and isinstance(call.arguments, dict)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=10) | st.integers(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                    max_leaves=12))
def test_parser_fuzz_structured_arguments(arguments):
    text = "<tool_call>\n" + json.dumps({"name": "crop_image_normalized", "arguments": arguments}) + "\n</tool_call>"
    try:
        call = P.parse_tool_call(text)
        assert isinstance(call.arguments, dict)
    except P.ToolCallError:
        pass  # a clear model-facing error is the right outcome for non-object arguments


def test_observation_texts():
    assert P.crop_observation(308, 252) == "\nHere is the cropped image (Image Size: 308x252):"
    assert P.frames_observation(224, 168, 1, 3) == \
        "\nHere are the selected frames (Frame Size: 224x168, Numbered 1 to 3):"
    assert P.error_observation("boom") == "\nExecution error:\nboom\n"


def test_non_utf8_text_is_made_safe():
    raw = b"caf\xe9?".decode("utf-8", "surrogateescape")
    cleaned = P.clean_text(raw)
    cleaned.encode("utf-8")  # must not raise
    assert cleaned.startswith("caf") and "\ufffd" in cleaned
