"""Measured figures for the core library (run: python -m bench.core_bench [--repeats 5]).

1. crop on a 4000x3000 image: ops.crop + resize_for_model (train preset), median ms
2. fetching 8 selected frames from a 60 s 720p H.264 mp4: decord (Video.frames) versus decoding
   sequentially with PyAV up to each frame, median ms (the video is generated once into the cache
   dir; its generation is not measured)
3. loop overhead versus raw generate time: core.loop.run with the transformers backend on the tiny
   random model, episode wall time minus the backend's own generation seconds
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


from core import operations as ops
from core.backends.base import GenerationParams
from core.media import Video, write_video

log = logging.getLogger("core_bench")
SELECTED = [2, 4, 6, 8, 10, 12, 14, 16]  # 1-based overview frames, as select_frames gets them


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall seconds of `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def big_photo(width: int = 4000, height: int = 3000) -> Image.Image:
    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    arr = (np.array([110, 160, 230], np.float32) * (1 - y) + np.array([70, 120, 60], np.float32) * y)
    arr = np.broadcast_to(arr, (height, width, 3)) + rng.integers(-8, 9, (height, width, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    ImageDraw.Draw(img).rectangle([480, 660, 1120, 1140], fill=(240, 230, 200))
    return img


def bench_crop(repeats: int) -> None:
    image = big_photo()
    px = ops.PixelLimits.preset("train")

    def crop_and_resize():
        cropped, _ = ops.crop(image, [0.12, 0.22, 0.28, 0.38])
        return ops.resize_for_model(cropped, px.crop_min, px.crop_max)

    t, view = timed(crop_and_resize, repeats)
    t_full, whole = timed(lambda: ops.resize_for_model(ops.crop(image, [0.0, 0.0, 0.99, 0.99])[0],
                                                       px.crop_min, px.crop_max), repeats)
    print(f"crop 4000x3000, small box -> {view.width}x{view.height}: {t * 1e3:.1f} ms (median of {repeats})")
    print(f"crop 4000x3000, whole image -> {whole.width}x{whole.height}: {t_full * 1e3:.1f} ms (median of {repeats})")


def video_frames(n: int, width: int = 1280, height: int = 720):
    """Moving gradient + a moving box + the frame number: compressible but not static."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    yy = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    for i in range(n):
        blue = np.full((height, width), (i * 5) % 256, np.float32)
        base = np.stack([(x + 3 * i) % 256 + 0 * yy, (yy + 2 * i) % 256 + 0 * x, blue], -1)
        img = Image.fromarray(base.astype(np.uint8))
        d = ImageDraw.Draw(img)
        d.rectangle([(i * 7) % (width - 200), 200, (i * 7) % (width - 200) + 160, 360], fill=(255, 255, 0))
        d.text((40, 40), f"frame {i}", fill=(255, 255, 255))
        yield img


def pyav_sequential(path: str, indices: list[int]) -> list[Image.Image]:
    """Decode from the start, keeping the wanted frames (the naive reader decord is compared with)."""
    import av

    wanted, out = set(indices), {}
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_image()
                if len(out) == len(wanted):
                    break
    return [out[i] for i in indices]


def bench_video(cache: Path, repeats: int) -> None:
    path = cache / "bench_60s_720p.mp4"
    if not path.exists():
        t0 = time.perf_counter()
        write_video(video_frames(60 * 30), path, fps=30)
        log.info("generated %s in %.1f s (not measured)", path, time.perf_counter() - t0)
    t_open, video = timed(lambda: Video.from_file(path), 1)
    targets = [video.source_indices[k - 1] for k in SELECTED]
    t_decord, frames = timed(lambda: Video.from_file(path).frames(SELECTED), repeats)
    t_frames, _ = timed(lambda: video.frames(SELECTED), repeats)
    t_pyav, seq = timed(lambda: pyav_sequential(str(path), targets), repeats)
    same = all(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() < 3 for a, b in zip(frames, seq))
    print(f"video {path.name}: {video.n_source_frames} frames {video.size[0]}x{video.size[1]} @ {video.fps:g} fps")
    print(f"  open + 16-frame overview (decord): {t_open * 1e3:.0f} ms")
    print(f"  8 selected frames, decord Video.frames on an open video: {t_frames * 1e3:.0f} ms (median of {repeats})")
    print(f"  8 selected frames, decord incl. opening the file and its overview: {t_decord * 1e3:.0f} ms (median of {repeats})")
    print(f"  8 selected frames, PyAV sequential decode: {t_pyav * 1e3:.0f} ms (median of {repeats})")
    print(f"  frames agree between readers: {same}; decord speed-up {t_pyav / t_frames:.1f}x")


def bench_loop(cache: Path, repeats: int) -> None:
    from core.backends.hf import TransformersBackend
    from core.loop import Done, Episode, LoopConfig, Task, run
    from train.tiny import build_random_checkpoint

    ckpt = cache / "tiny-random"
    if not (ckpt / "config.json").exists():
        build_random_checkpoint(ckpt, seed=0)
    backend = TransformersBackend(str(ckpt), device="cpu")
    image = big_photo(1600, 1200)
    config = LoopConfig(pixels=ops.PixelLimits.preset("tiny"))
    params = GenerationParams(max_new_tokens=32)
    rows = []
    for _ in range(repeats + 1):  # the first run warms up
        t0 = time.perf_counter()
        for event in run(backend, Task(question="What is written on the sign?", image=image), config, params):
            if isinstance(event, Done):
                traj = event.trajectory
        wall = time.perf_counter() - t0
        gen = sum(s.gen_seconds for s in traj.steps)
        rows.append((wall, gen, sum(s.tokens_out for s in traj.steps), traj.steps[0].tokens_in))
    rows = rows[1:]
    wall, gen = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
    episode_msgs = Episode(Task(question="What is written on the sign?", image=image), config).messages
    t_enc, _ = timed(lambda: backend.encoder.encode(episode_msgs, add_generation_prompt=True), repeats)
    print(f"loop on the tiny random model (CPU, {rows[0][3]} prompt tokens, {rows[0][2]} new tokens, 1 step):")
    print(f"  episode wall {wall * 1e3:.1f} ms, backend generation {gen * 1e3:.1f} ms "
          f"(of which encoding {t_enc * 1e3:.1f} ms), loop overhead {(wall - gen) * 1e3:.1f} ms "
          f"({(wall - gen) / wall * 100:.1f}% of the episode; median of {repeats})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "pixel-reasoner-bench"),
                        help="where the generated 60 s video and tiny checkpoint are kept between runs")
    parser.add_argument("--only", choices=["crop", "video", "loop"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "crop"):
        bench_crop(args.repeats)
    if args.only in (None, "video"):
        bench_video(cache, args.repeats)
    if args.only in (None, "loop"):
        bench_loop(cache, args.repeats)


if __name__ == "__main__":
    main()
