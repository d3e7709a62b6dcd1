"""The performance table's I/O rows: crop, frame selection, session logging (see bench/perf.py)."""
from __future__ import annotations

import statistics
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core import operations as ops
from core.backends.replay import ReplayBackend
from core.loop import Task, run_to_end
from core.protocol import format_tool_call
from core.recorder import Recorder
from core.sessionlog import SessionLog

SELECTED = [2, 4, 6, 8, 10, 12, 14, 16]  # 1-based overview frames, as select_frames gets them


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def big_photo(width: int = 4000, height: int = 3000) -> Image.Image:
    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    arr = (np.array([110, 160, 230], np.float32) * (1 - y) + np.array([70, 120, 60], np.float32) * y)
    arr = np.broadcast_to(arr, (height, width, 3)) + rng.integers(-8, 9, (height, width, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    ImageDraw.Draw(img).rectangle([480, 660, 1120, 1140], fill=(240, 230, 200))
    return img


BOXES = {"typical box": [0.12, 0.22, 0.28, 0.38], "near-whole box": [0.05, 0.05, 0.85, 0.85]}


def bench_crop(repeats: int, presets: tuple[str, ...] = ("tiny", "train", "eval")) -> dict[str, dict]:
    """The loop's exact crop of a 4000x3000 photo (box maths, the crop, one bicubic resize to the
    model's view), per preset and box, median ms; beside it PIL's crop and resize in one thread.
    Presets that crop what the model was shown (`from_view`) cut the photo's first view."""
    photo, out = big_photo(), {}
    for preset in presets:
        px = ops.PixelLimits.preset(preset)
        image = ops.resize_for_model(photo, px.first_min, px.first_max) if px.from_view else photo
        for label, bbox in BOXES.items():
            def crop():
                box = ops.crop_box(bbox, image.width, image.height)
                return ops.crop_view(image, box, px.crop_min, px.crop_max)

            view, box = crop(), ops.crop_box(bbox, image.width, image.height)

            def plain():
                return image.crop(box.px).resize(view.size, Image.Resampling.BICUBIC)

            assert plain().tobytes() == view.tobytes(), "the loop's crop must be PIL's bytes"
            out[f"{preset} preset, {label}"] = {
                "ms": median_time(crop, repeats) * 1e3, "pil_ms": median_time(plain, repeats) * 1e3,
                "view": f"{view.width}x{view.height}", "box": f"{box.px[2] - box.px[0]}x{box.px[3] - box.px[1]}",
                "source": f"{image.width}x{image.height}"}
    return out


# ---- frame selection ---------------------------------------------------------------------------

def video_frames(n: int, width: int = 1280, height: int = 720):
    """A moving gradient, a moving box and the frame number: compressible but never static."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    yy = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    for i in range(n):
        blue = np.full((height, width), (i * 5) % 256, np.float32)
        img = Image.fromarray(np.stack([(x + 3 * i) % 256 + 0 * yy, (yy + 2 * i) % 256 + 0 * x, blue], -1)
                              .astype(np.uint8))
        d = ImageDraw.Draw(img)
        d.rectangle([(i * 7) % (width - 200), 200, (i * 7) % (width - 200) + 160, 360], fill=(255, 255, 0))
        d.text((40, 40), f"frame {i}", fill=(255, 255, 255))
        yield img


def encode(path: Path, seconds: int, fps: int = 30, keyint: int | None = None) -> Path:
    """H.264 with x264's defaults (CRF 23, medium; keyframes every 250 frames) or a keyint of our choosing."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        if keyint:
            stream.options = {"g": str(keyint), "keyint_min": str(keyint)}
        for i, img in enumerate(video_frames(seconds * fps)):
            frame = av.VideoFrame.from_image(img)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def pyav_seek(path: str, indices: list[int]) -> list[Image.Image]:
    """Seek to the keyframe before each wanted frame, decode forward to it (one open file)."""
    import av

    out = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        step = 1 / (stream.average_rate * stream.time_base)
        for i in indices:
            target = int(round(i * step))
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts >= target:
                    out.append(frame.to_image())
                    break
    return out


def pyav_sequential(path: str, indices: list[int]) -> list[Image.Image]:
    import av

    wanted, got = set(indices), {}
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                got[i] = frame.to_image()
                if len(got) == len(wanted):
                    break
    return [got[i] for i in indices]


def bench_frames(cache: Path, seconds: int, repeats: int) -> list[dict]:
    """8 selected frames of a 720p mp4, per GOP: Video.frames (core/frames.py), a plain PyAV seek per frame,
    PyAV sequential."""
    from core.media import Video

    rows = []
    for name, keyint in (("x264 default GOP (250)", None), ("2 s GOP (60)", 60)):
        path = cache / f"perf_{seconds}s_720p_{keyint or 'default'}.mp4"
        if not path.exists():
            encode(path, seconds, keyint=keyint)
        video = Video.from_file(path)
        targets = [video.source_indices[k - 1] for k in SELECTED]
        t_video = median_time(lambda: video.frames(SELECTED), repeats)
        t_seek = median_time(lambda: pyav_seek(str(path), targets), repeats)
        t_seq = median_time(lambda: pyav_sequential(str(path), targets), repeats)
        same = all(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() < 3
                   for a, b in zip(video.frames(SELECTED), pyav_seek(str(path), targets)))
        rows.append({"video": f"{seconds} s 720p, {name}", "video_ms": t_video * 1e3, "seek_ms": t_seek * 1e3,
                     "sequential_ms": t_seq * 1e3, "readers_agree": same})
    return rows


# ---- logging -----------------------------------------------------------------------------------

def bench_logging(folder: Path, n_steps: int) -> dict:
    """Recorder.step throughput when every step brings a new crop: steps/s in the step write itself,
    and counting the image store too (PNG encode + thumbnail, done in the loop before the write)."""
    log = SessionLog(folder / "log.db")
    recorder = Recorder(log, "bench")
    image = big_photo(800, 600)
    turn = "Zoom.\n\n" + format_tool_call("crop_image_normalized", {"bbox_2d": [0.1, 0.1, 0.4, 0.4],
                                                                     "target_image": 1})
    template = run_to_end(ReplayBackend([turn, "\\boxed{x}"]), Task(question="q", image=image), store=log.images)
    step0 = template.steps[0]
    recorder.start(template)
    scene = big_photo(1600, 1200)
    crops = [scene.crop((i % 1200, (i // 1200) % 900, i % 1200 + 336, (i // 1200) % 900 + 252))
             for i in range(n_steps)]  # a new picture every step
    t_log = t_store = 0.0
    for i, crop in enumerate(crops):
        t0 = time.perf_counter()
        ref = replace(step0.images[0], sha=log.images.put(crop))
        t_store += time.perf_counter() - t0
        step = replace(step0, index=i, images=[ref])  # the loop's Step, made before the write
        t1 = time.perf_counter()
        recorder.step(template.id, step)
        t_log += time.perf_counter() - t1
    n_images = log.db.execute("SELECT count(*) FROM images").fetchone()[0]
    return {"steps": n_steps, "step_write_per_s": n_steps / t_log, "with_store_per_s": n_steps / (t_log + t_store),
            "images_rows": n_images}
