"""Figures for public hosting (run: python -m bench.safety_bench [--uploads 16] [--accepted-mp 24]).

1. answer extraction: ms for last_boxed / extract_answer over 1 MB of "\\boxed{" text     target < 100
2. the app's peak memory (VmHWM of the `python app.py` process) while N visitors upload at once:
   a. N uploads of a 64 MP PNG (a ~200 KB file): refused from the header by the megapixel cap
   b. N uploads of a picture just under the cap, answered with the replay backend, --max-concurrent 4
   goal: bounded by the cap (a), and by max-concurrent x the per-upload cost at the cap (b)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from core.scoring import extract_answer, last_boxed


def bench_boxed(repeat: int = 5) -> float:
    text = "\\boxed{" * (1_000_000 // 7)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        last_boxed(text)
        extract_answer(text)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def big_png(path: Path, side: int) -> Path:
    """A side x side PNG that compresses to little (a decompression bomb in miniature)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), (200, 180, 160))
    ImageDraw.Draw(img).rectangle([side // 10, side // 10, side // 5, side // 5], fill=(20, 40, 60))
    img.save(path, optimize=False, compress_level=9)
    return path


def serve(tmp: Path, *flags: str):
    from tests.test_app_server import free_port

    tmp.mkdir(parents=True, exist_ok=True)
    turns = tmp / "turns.json"
    turns.write_text(json.dumps(["It is a square. \\boxed{square}"]))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "app.py", "--backend", "replay", "--replay", str(turns), "--db",
                             str(tmp / "data" / "studio.db"), "--port", str(port), *flags], cwd=ROOT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            urllib.request.urlopen(url + "/gradio_api/info", timeout=2)
            return url, proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def uploads(tmp: Path, picture: Path, n: int, *flags: str) -> dict:
    from gradio_client import Client, handle_file

    url, proc = serve(tmp, *flags)
    try:
        Client(url, verbose=False).view_api(print_info=False)
        rss0, hwm0 = peak_rss_mb(proc.pid)

        def one(_):
            client = Client(url, verbose=False)
            return client.predict(handle_file(str(picture)), "What shape?", "replay", "", True, 0.0, 4, 64, "vcot",
                                  False, api_name="/ask")[2]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            statuses = list(pool.map(one, range(n)))
        seconds = time.perf_counter() - t0
        rss1, hwm1 = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"before_mb": round(rss0), "peak_mb": round(hwm1), "hwm_before_mb": round(hwm0),
            "seconds": round(seconds, 1), "first_status": statuses[0][:120],
            "refused": sum(s.startswith("⚠️") for s in statuses), "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=16)
    ap.add_argument("--accepted-mp", type=float, default=24.0, help="size of the accepted pictures in part b")
    args = ap.parse_args()
    print(f"1. last_boxed + extract_answer over 1 MB of \\boxed{{: {bench_boxed():.1f} ms (best of 5)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bomb = big_png(tmp / "bomb64mp.png", 8000)
        a = uploads(tmp / "a", bomb, args.uploads)
        print(f"2a. {a['n']} concurrent 64 MP uploads ({bomb.stat().st_size / 1e3:.0f} KB each), cap 40 MP: "
              f"{a['refused']} refused; app RSS {a['before_mb']} MB before, peak {a['peak_mb']} MB "
              f"({a['seconds']} s) · status: {a['first_status']}")
        side = int((args.accepted_mp * 1e6) ** 0.5)
        ok = big_png(tmp / "ok.png", side)
        b = uploads(tmp / "b", ok, args.uploads, "--max-concurrent", "4")
        print(f"2b. {b['n']} concurrent {side}x{side} ({side * side / 1e6:.0f} MP) uploads, --max-concurrent 4: "
              f"{b['n'] - b['refused']} answered; app RSS {b['before_mb']} MB before, peak {b['peak_mb']} MB "
              f"({b['seconds']} s)")


if __name__ == "__main__":
    main()
