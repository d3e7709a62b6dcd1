"""Peak memory of the app under 8 concurrent hostile videos (run: python -m bench.video_bench [--n 8]).

Each case starts `python app.py --public` (replay backend, --max-concurrent N, --max-asks-per-visitor N),
sends N Asks at once with the same crafted video, and reads the server's VmHWM (peak RSS) from /proc:

  a. header 320x240, later frames 7680x4320 (MPEG-TS segments concatenated)   refused per decoded frame
  b. 200,000 frames of 16x16 (a few bytes each)                                 refused at --max-video-frames
  c. 4 frames spread over 2 hours                                               refused at --max-video-seconds
  d. accepted: 1920x1080, 48 frames, with --max-video-megapixels 2.1            the bound's per-video cost

docs/public.md's bound: peak <= idle + N x (16 overview frames x frame cap x 4 bytes + ~40 MB).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.safety_bench import peak_rss_mb, serve


OVERHEAD_MB = 40  # per Ask: FFmpeg's frame pool (~25 MB for 1080p), the upload, storing the model's views


def crafted(tmp: Path) -> dict[str, Path]:
    from core.media import write_video
    from tests.conftest import numbered_frames
    from tests.hostile_media import growing_video, long_video, many_frames_video

    t0 = time.perf_counter()
    files = {"a": growing_video(tmp / "grows.mp4", small=(320, 240), big=(7680, 4320), n_small=8, n_big=8),
             "b": many_frames_video(tmp / "many.mp4", 200_000, fps=1000),  # 200 s: under the duration cap
             "c": long_video(tmp / "long.mp4", seconds=7200),
             "d": write_video(numbered_frames(48, 1920, 1080), tmp / "hd.mp4", fps=8)}
    print(f"made the videos in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k} {p.stat().st_size / 1e6:.1f} MB" for k, p in files.items()))
    return files


def asks(tmp: Path, video: Path, n: int, *flags: str) -> dict:
    from gradio_client import Client, handle_file

    url, proc = serve(tmp, "--public", "--max-concurrent", str(n), "--max-asks-per-visitor", str(n), *flags)
    try:
        Client(url, verbose=False).view_api(print_info=False)
        time.sleep(1.0)
        rss0, _ = peak_rss_mb(proc.pid)

        def one(_):
            return Client(url, verbose=False).predict(handle_file(str(video)), "What happens?", "replay", "", True,
                                                      0.0, 4, 64, "vcot", False, api_name="/ask")[2]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            statuses = list(pool.map(one, range(n)))
        seconds = time.perf_counter() - t0
        time.sleep(1.0)
        rss1, hwm = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"idle": rss0, "peak": hwm, "after": rss1, "seconds": seconds, "status": statuses[0][:110],
            "refused": sum(s.startswith("⚠️") for s in statuses)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="concurrent Asks (and --max-concurrent)")
    ap.add_argument("--cases", default="abcd", help="which of a, b, c, d to run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        files = crafted(tmp)
        cases = (("a", ()), ("b", ()), ("c", ()), ("d", ("--max-video-megapixels", "2.1")))
        for key, flags in (c for c in cases if c[0] in args.cases):
            r = asks(tmp / key, files[key], args.n, *flags)
            print(f"{key}. {args.n} x {files[key].name}: {r['refused']} refused in {r['seconds']:.1f} s; RSS idle "
                  f"{r['idle']:.0f} MB, peak {r['peak']:.0f} MB (+{r['peak'] - r['idle']:.0f}), after "
                  f"{r['after']:.0f} MB · {r['status']}")
        per_video = 16 * 1920 * 1080 * 4 / 2 ** 20 + OVERHEAD_MB
        print(f"bound for d: idle + {args.n} x (16 x 1920x1080 x 4 B + {OVERHEAD_MB} MB = {per_video:.0f} MB) "
              f"= idle + {args.n * per_video:.0f} MB")


if __name__ == "__main__":
    main()
