"""Measured figures for the Studio app (run: python -m bench.app_bench [--sessions 10000]).

1. logging throughput: steps/s through Recorder.step (one transaction per step)  target >= 2000
2. session-list filter over N sessions (SQL paging, FTS, filters), median ms           target <= 200
3. tool result -> step visible in a gradio_client stream, median ms                    target <= 300
4. annotation export: annotated sessions re-executed into SFT records per second         (no target)
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path


from core.backends.replay import ReplayBackend
from core.loop import Task, run_to_end
from core.protocol import format_tool_call
from app.shared.studio_log import StudioLog
from core.sessionquery import SessionFilter
from core.recorder import Recorder

TURNS = ["I should zoom on the sign to read it.\n\n" + format_tool_call(
            "crop_image_normalized", {"bbox_2d": [0.12, 0.22, 0.28, 0.38], "target_image": 1}),
         "Still small; closer.\n\n" + format_tool_call(
            "crop_image_normalized", {"bbox_2d": [0.2, 0.2, 0.8, 0.8], "target_image": 2}),
         "<tool_call>\n{\"name\": \"crop_image_normalized\", \"arguments\": {bbox_2d: 1}\n</tool_call>",
         "The sign reads WOOLSHOPS. \\boxed{WOOLSHOPS}"]
WORDS = "sign car dog tree lamp shop bus door window person bicycle clock".split()


def picture():
    from app.ask.examples import _example_picture
    return _example_picture()


def bench_logging(log: StudioLog, n_sessions: int) -> tuple[float, int, float, float]:
    template = run_to_end(ReplayBackend(TURNS), Task(question="q", image=picture()), store=log.images)
    recorder = Recorder(log, "app")
    t0, n_steps, step_seconds = time.perf_counter(), 0, 0.0
    for i in range(n_sessions):
        traj = replace(template, id=f"s{i:06d}", question=f"What colour is the {WORDS[i % 12]} number {i}?",
                       model=f"model-{i % 3}", created_at=time.time() - (n_sessions - i) * 60, steps=[])
        steps = [replace(s) for s in template.steps[: 1 + i % 4]]
        recorder.start(traj)
        for s in steps:
            t1 = time.perf_counter()
            recorder.step(traj.id, s)
            step_seconds += time.perf_counter() - t1
            n_steps += 1
        traj.steps = steps
        traj.answer, traj.status, traj.correct = "x", "done", (None if i % 5 == 0 else bool(i % 2))
        recorder.finish(traj)
        if i % 7 == 0:
            log.add_annotation(traj.id, label="wrong box")
    seconds = time.perf_counter() - t0
    return n_steps / seconds, n_steps, seconds, n_steps / step_seconds


def bench_filters(log: StudioLog) -> dict[str, float]:
    cases = {
        "first page, no filter": SessionFilter(),
        "model + outcome": SessionFilter(model="model-1", outcome="correct"),
        "ops range + has errors": SessionFilter(min_ops=1, max_ops=2, has_errors=True),
        "annotated": SessionFilter(annotated=True),
        "full-text 'bicycle'": SessionFilter(text="bicycle"),
        "full-text on reasoning 'closer'": SessionFilter(text="closer"),
        "date range, page 50": SessionFilter(since=time.time() - 86400 * 3, offset=50 * 50),
    }
    out = {}
    for name, f in cases.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            log.list_sessions(f)
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = statistics.median(times)
    return out


def bench_stream(tmp: Path, runs: int = 4, download: bool = False) -> list[float]:
    from gradio_client import Client, handle_file

    from app import Studio
    from app.ui import build_app, launch_kwargs

    tmp.mkdir(parents=True, exist_ok=True)
    replay = tmp / "turns.json"
    replay.write_text(json.dumps(TURNS))
    img = tmp / "street.png"
    picture().save(img)
    studio = Studio(log=StudioLog(tmp / "stream.db"), data_dir=tmp, backend="replay", replay=str(replay),
                    step_delay=0.4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=port, **launch_kwargs())
    # download=False: like a browser, take the message list as it streams and fetch pictures lazily;
    # download=True: gradio_client also downloads every picture of the chat before yielding an update
    client = Client(demo.local_url, verbose=False, download_files=download)
    lags = []
    try:
        for r in range(runs):
            seen: dict[str, float] = {}
            job = client.submit(handle_file(str(img)), f"bench {r}", "replay", str(replay), True, 0.0, 4, 256,
                                "vcot", False, api_name="/ask")
            for chat, _, _ in job:
                now = time.time()
                for m in chat:
                    meta = m.get("metadata") or {}
                    if meta.get("status") == "done" and meta.get("id") and meta["id"] not in seen:
                        seen[meta["id"]] = now
            status = job.result()[2]
            sid = status.split("session `")[1].split("`")[0]
            for s in studio.log.get_trajectory(sid).steps:
                if s.tool and f"s{s.index}" in seen:
                    tool_done = s.started_at + s.gen_seconds + s.tool_seconds
                    lags.append((seen[f"s{s.index}"] - tool_done) * 1000)
    finally:
        demo.close()
    return lags


def bench_export(tmp: Path, n: int) -> tuple[float, int, float]:
    """n sessions with a wrong box, each annotated with a corrected box and answer, exported."""
    from app.annotate.export import export_annotated

    log = StudioLog(tmp / "export.db")
    wrong = ["The sign is at the top.\n\n" + format_tool_call(
        "crop_image_normalized", {"bbox_2d": [0.6, 0.05, 0.9, 0.3], "target_image": 1}), "\\boxed{SHOP}"]
    template = run_to_end(ReplayBackend(wrong), Task(question="q", image=picture(), answer="WOOLSHOPS"),
                          store=log.images)
    for i in range(n):
        traj = replace(template, id=f"e{i:05d}", question=f"What does sign {i} say?", correct=False)
        Recorder(log, "app").write(traj)
        log.add_annotation(traj.id, 0, "wrong box", corrected_box=[0.12, 0.22, 0.28, 0.38])
        log.add_annotation(traj.id, None, "wrong answer", corrected_answer="WOOLSHOPS")
    t0 = time.perf_counter()
    report = export_annotated(log, tmp / "export")
    secs = time.perf_counter() - t0
    return report.records / secs, report.records, secs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--skip-stream", action="store_true")
    p.add_argument("--export", type=int, default=200, help="annotated sessions to export (0: skip)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        log = StudioLog(tmp / "bench.db")
        rate, n_steps, secs, step_rate = bench_logging(log, args.sessions)
        print(f"logging throughput: {step_rate:,.0f} steps/s through Recorder.step (one transaction each; target >= 2000); "
              f"{rate:,.0f} steps/s counting session start/finish rows too ({n_steps} steps in {args.sessions} "
              f"sessions, {secs:.1f} s)")
        log.db.analyze()
        for name, ms in bench_filters(log).items():
            print(f"session-list filter over {args.sessions} sessions, {name}: {ms:.1f} ms median (target <= 200)")
        if args.export:
            rate, n, secs = bench_export(tmp, args.export)
            print(f"annotation export: {rate:.1f} sessions/s re-executed into SFT records ({n} records, "
                  f"{secs:.1f} s, 800x600 source, one masked wrong crop + one corrected crop each)")
        if not args.skip_stream:
            for download in (False, True):
                lags = bench_stream(tmp / f"stream{int(download)}", download=download)
                what = "with every picture downloaded" if download else "message list, pictures fetched lazily"
                print(f"tool result -> step visible in gradio_client ({what}): median "
                      f"{statistics.median(lags):.0f} ms, max {max(lags):.0f} ms over {len(lags)} steps "
                      "(target <= 300)")


if __name__ == "__main__":
    main()
