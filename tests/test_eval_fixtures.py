"""Small benchmark folders in the released layouts (real images, frames and videos), and loader tests.

The builders are imported by the other tests/test_eval_*.py files.
Released layout: `<Name>-EvalData-PixelReasoner/<stem>.parquet` + `images/...`; the parquet's
`image` column lists paths relative to that folder; MVBench rows set `is_video` and list frames.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from core.media import write_video
from tests.conftest import numbered_frames, photo_like

MC_QUESTION = "What is the colour of the small square?\nchoices:\nA: red  \nB: blue  \nC: green  \nD: yellow"


def _save(img: Image.Image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return str(path)


def square_image(colour: str, seed: int, size=(640, 480)) -> Image.Image:
    img = photo_like(*size, seed=seed)
    rgb = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (240, 220, 20)}[colour]
    x, y = 40 + seed * 37 % (size[0] - 80), 40 + seed * 53 % (size[1] - 80)
    ImageDraw.Draw(img).rectangle([x, y, x + 12, y + 12], fill=rgb)
    return img


def make_vstar(root: Path, n: int = 4) -> Path:
    """VStar-EvalData-PixelReasoner/vstar.parquet + images/ (answers alternate A, B)."""
    folder = root / "VStar-EvalData-PixelReasoner"
    rows = []
    for i in range(n):
        colour = ["red", "blue"][i % 2]
        _save(square_image(colour, i), folder / "images" / f"sa_{i}.jpg")
        rows.append({"qid": f"vstar_{i}", "question": "<image>\n" + MC_QUESTION, "answer": "AB"[i % 2],
                     "image": [f"images/sa_{i}.jpg"],
                     "category": ["direct_attributes", "relative_position"][i // 2 % 2]})
    pd.DataFrame(rows).to_parquet(folder / "vstar.parquet")
    return folder


def make_tallyqa(root: Path, n: int = 3) -> Path:
    """TallyQA: numeric answers (int column), one image per row."""
    folder = root / "TallyQA-EvalData-PixelReasoner"
    rows = []
    for i in range(n):
        img = photo_like(480, 360, seed=10 + i)
        d = ImageDraw.Draw(img)
        for k in range(i + 1):
            d.ellipse([20 + 60 * k, 200, 60 + 60 * k, 240], fill=(250, 250, 250))
        _save(img, folder / "images" / f"tally_{i}.png")
        rows.append({"qid": f"tally_{i}", "question": "How many white circles are there?", "answer": i + 1,
                     "image": [f"images/tally_{i}.png"]})
    pd.DataFrame(rows).to_parquet(folder / "tallyqa_complex.parquet")
    return folder


def make_mvbench(root: Path, n_frames_rows: int = 2, with_video_file: bool = True) -> Path:
    """MVBench: pre-extracted frames (is_video, 16 frame paths per row) and one plain .mp4 row."""
    folder = root / "MVBench-EvalData-PixelReasoner"
    rows = []
    for i in range(n_frames_rows):
        paths = []
        for k, frame in enumerate(numbered_frames(16, 224, 168)):
            paths.append(f"images/vid_{i}/frame_{k + 1:02d}.jpg")
            _save(frame, folder / paths[-1])
        rows.append({"qid": f"mv_{i}", "question": "Which number appears first?\n(A) 0\n(B) 5\n(C) 9",
                     "answer": "(A) 0", "image": paths, "is_video": True, "category": "action_sequence"})
    if with_video_file:
        write_video(numbered_frames(24, 224, 168), folder / "images" / "clip.mp4", fps=8)
        rows.append({"qid": "mv_file", "question": "Which number appears first?\n(A) 3\n(B) 0\n(C) 9",
                     "answer": "B", "image": ["images/clip.mp4"], "is_video": True, "category": "action_sequence"})
    pd.DataFrame(rows).to_parquet(folder / "mvbench.parquet")
    return folder


def make_infovqa(root: Path) -> Path:
    """InfoVQA: a list of reference answers per row (ANLS)."""
    folder = root / "InfoVQA-EvalData-PixelReasoner"
    rows = []
    for i, answers in enumerate([["42%", "42"], ["new york"], ["woolshops"]]):
        img = Image.new("RGB", (600, 900), (250, 250, 245))
        ImageDraw.Draw(img).text((40, 40 + 80 * i), f"answer {answers[0]}", fill=(10, 10, 10))
        _save(img, folder / "images" / f"info_{i}.png")
        rows.append({"qid": f"info_{i}", "question": "What does the chart say?", "answer": answers,
                     "image": [f"images/info_{i}.png"]})
    pd.DataFrame(rows).to_parquet(folder / "infovqa.parquet")
    return folder


def make_tinyzoom(root: Path, n: int = 4) -> Path:
    """A TinyZoom-format folder: test.jsonl records with meta.task naming originals/ and videos/."""
    folder = root / "tinyzoom"
    cats = ["zoom_needed", "zoom_optional", "counting", "relative", "video"]
    lines = []
    for i in range(n):
        cat = cats[i % len(cats)]
        item_id = f"test-{i:05d}-{cat}"
        if cat == "video":
            media = f"videos/{item_id}.mp4"
            write_video(numbered_frames(16, 224, 168), folder / media, fps=4)
        else:
            media = f"originals/{item_id}.png"
            _save(square_image("red", i, (448, 448)), folder / media)
        task = {"question": "What is the code on the tag?", "answer": str(100 + i), "category": cat, "media": media,
                "kind": "video" if cat == "video" else "image"}
        lines.append(json.dumps({"id": item_id, "messages": [], "train_turns": [], "meta": {"category": cat,
                                                                                        "task": task}}))
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    return folder


# ---- loader tests ----------------------------------------------------------------------------

def test_vstar_loader_reads_release_layout(tmp_path):
    from core.evaluation.data import load_items

    folder = make_vstar(tmp_path)
    items = load_items("vstar", folder)
    assert [i.id for i in items] == ["vstar_0", "vstar_1", "vstar_2", "vstar_3"]
    it = items[0]
    assert it.kind == "image" and Path(it.media[0]).is_file() and it.truth == "A"
    assert it.score_choices == ["red", "blue", "green", "yellow"] and it.choices is None  # choices stay in the text
    assert it.category == "direct_attributes"
    task = it.task()
    assert task.image.size == (640, 480) and task.question.startswith("<image>\nWhat is")
    # the parquet file itself works as --data, and --limit keeps the first rows
    assert len(load_items("vstar", folder / "vstar.parquet", limit=2)) == 2


def test_prepare_sh_layout_and_absolute_paths(tmp_path):
    """prepare.sh moves images/ to <stem>_images/ beside the parquet; rename_imagepath writes absolute paths."""
    from core.evaluation.data import load_items

    folder = make_vstar(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (folder / "images").rename(data / "vstar_images")
    df = pd.read_parquet(folder / "vstar.parquet")
    elsewhere = f"{tmp_path / 'another-machine' / 'data'}/vstar_"  # the release's absolute paths, not here
    df["image"] = df["image"].apply(lambda ls: [elsewhere + p for p in ls])
    df.to_parquet(data / "vstar.parquet")
    items = load_items("vstar", data / "vstar.parquet")
    assert all(Path(i.media[0]).parent == data / "vstar_images" for i in items)


def test_mvbench_frames_and_video_file(tmp_path):
    from core.evaluation.data import load_items

    items = load_items("mvbench", make_mvbench(tmp_path))
    frames, video = items[0], items[-1]
    assert frames.kind == "frames" and len(frames.media) == 16 and frames.truth == "(A) 0"
    assert frames.score_choices == ["0", "5", "9"]
    assert video.kind == "video" and video.media[0].endswith("clip.mp4")
    t = frames.task()
    assert t.video.n_frames == 16 and t.video.path is None
    t = video.task()
    assert t.video.n_frames == 16 and t.video.path.endswith("clip.mp4")


def test_infovqa_answer_lists_and_tallyqa_numbers(tmp_path):
    from core.evaluation.data import load_items

    info = load_items("infovqa", make_infovqa(tmp_path))
    assert info[0].truth == ["42%", "42"]
    tally = load_items("tallyqa", make_tallyqa(tmp_path))
    assert [t.truth for t in tally] == ["1", "2", "3"]


def test_tinyzoom_loader(tmp_path):
    from core.evaluation.data import load_items

    folder = make_tinyzoom(tmp_path, n=5)
    items = load_items("tinyzoom", folder)
    assert [i.category for i in items] == ["zoom_needed", "zoom_optional", "counting", "relative", "video"]
    assert items[-1].kind == "video"
    assert [i.id for i in load_items("tinyzoom", folder, categories=["counting"])] == ["test-00002-counting"]


@pytest.mark.parametrize("drop,message", [("answer", "missing column 'answer'"), ("image", "missing column 'image'"),
                                          ("question", "missing column 'question'")])
def test_missing_column_is_named(tmp_path, drop, message):
    from core.evaluation.data import EvalDataError, load_items

    folder = make_vstar(tmp_path, n=2)
    df = pd.read_parquet(folder / "vstar.parquet").drop(columns=[drop])
    df.to_parquet(folder / "vstar.parquet")
    with pytest.raises(EvalDataError, match=message) as e:
        load_items("vstar", folder)
    assert "vstar.parquet" in str(e.value)


def test_missing_media_file_is_named(tmp_path):
    from core.evaluation.data import EvalDataError, load_items

    folder = make_vstar(tmp_path, n=2)
    (folder / "images" / "sa_1.jpg").unlink()
    with pytest.raises(EvalDataError, match=r"row 1 \(qid vstar_1\): media file not found: 'images/sa_1.jpg'"):
        load_items("vstar", folder)
    with pytest.raises(EvalDataError, match="no such file"):
        load_items("vstar", tmp_path / "nowhere")
    with pytest.raises(EvalDataError, match="missing meta.task"):
        (tmp_path / "tz").mkdir()
        (tmp_path / "tz" / "test.jsonl").write_text(json.dumps({"id": "x", "messages": []}) + "\n")
        load_items("tinyzoom", tmp_path / "tz")


def test_embedded_image_bytes(tmp_path):
    """A parquet written by `datasets` with an Image feature stores {"bytes", "path"} dicts."""
    import io

    from core.evaluation.data import load_items

    buf = io.BytesIO()
    photo_like(320, 240).save(buf, format="PNG")
    folder = tmp_path / "emb"
    folder.mkdir()
    pd.DataFrame([{"qid": "e0", "question": "Q?", "answer": "3",
                   "image": {"bytes": buf.getvalue(), "path": "x.png"}}]).to_parquet(folder / "t.parquet")
    (item,) = load_items("tallyqa", folder)
    assert item.task().image.size == (320, 240)


def test_parse_choices():
    from core.evaluation.data import parse_choices

    assert parse_choices(MC_QUESTION) == ["red", "blue", "green", "yellow"]
    assert parse_choices("Q\n(A) cat\n(B) dog") == ["cat", "dog"]
    assert parse_choices("How many? A. lot of text") is None
    assert np.array_equal(parse_choices("x\nA: 1\nB: 2\nD: 4"), ["1", "2"])
