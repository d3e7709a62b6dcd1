"""Pixel Reasoner Studio: `python app.py` (also the Hugging Face Space entry point).

Runs on the embedded model (core.backends.default_model()) unless --model/--backend say otherwise.
On a Space (SPACE_ID set) the data folder is /data when it exists. The Train tab launches jobs only
with --enable-training (everywhere: it runs commands on the host).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def default_data_dir() -> Path:
    if os.environ.get("SPACE_ID") and Path("/data").is_dir():
        return Path("/data/studio")  # persistent storage on Spaces
    return ROOT / "data"


def build_parser() -> argparse.ArgumentParser:
    from core.backends import BACKENDS

    p = argparse.ArgumentParser(prog="python app.py", description=__doc__)
    p.add_argument("--db", help="SQLite session log (default: data/studio.db; /data/studio/studio.db on Spaces)")
    p.add_argument("--model", help="hub id or local path (default: the embedded model); for openai, the base URL")
    p.add_argument("--backend", choices=BACKENDS, default="transformers")
    p.add_argument("--replay", help="JSON list of assistant turns, for --backend replay")
    p.add_argument("--step-delay", type=float, default=0.0,
                   help="replay backend: seconds to wait before each turn (demos and crash tests)")
    p.add_argument("--host", default=None, help="default 127.0.0.1; 0.0.0.0 on Spaces")
    p.add_argument("--port", type=int, default=None, help="default 7860 (or GRADIO_SERVER_PORT)")
    p.add_argument("--enable-training", action="store_true", help="turn on the Train tab (launch SFT, RL and eval jobs)")
    p.add_argument("--share", action="store_true", help="a public gradio.live link")
    p.add_argument("--max-upload-mb", type=float, default=200.0)
    return p


def make_studio(args):
    from app import Studio
    from core.sessionlog import SessionLog

    db = Path(args.db) if args.db else default_data_dir() / "studio.db"
    log = SessionLog(db)
    n = log.mark_unfinished()  # sessions a crash left running
    if n:
        logging.getLogger("studio").warning("marked %d sessions left running by a crash as unfinished", n)
    studio = Studio(log=log, data_dir=db.parent, backend=args.backend, model=args.model, replay=args.replay,
                    enable_training=args.enable_training, step_delay=args.step_delay,
                    max_upload_mb=args.max_upload_mb)
    n = studio.jobs.reconcile()  # jobs a dead app left 'running' become failed (or done, from their exit file)
    if n:
        logging.getLogger("studio").warning("settled %d jobs left running by a stopped app", n)
    return studio


def main(argv: list[str] | None = None) -> None:
    from core.runtime import configure_threads

    configure_threads()  # before anything imports torch
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    studio = make_studio(args)
    from app.ask import preload_backend

    preload_backend(studio)  # the model loads while gradio imports and the page builds
    from app.ui import build_app, launch_kwargs

    demo = build_app(studio)
    host = args.host or ("0.0.0.0" if os.environ.get("SPACE_ID") else None)
    demo.queue(default_concurrency_limit=studio.max_concurrent_runs).launch(
        server_name=host, server_port=args.port, share=args.share,
        max_file_size=f"{int(args.max_upload_mb)}mb", **launch_kwargs())


if __name__ == "__main__":
    main()
