"""Pixel Reasoner Studio: `python app.py` (also the Hugging Face Space entry point).

Runs on the embedded model (core.backends.default_model()) unless --model/--backend (or the
STUDIO_MODEL/STUDIO_BACKEND... variables, for a Space) say otherwise. On a Space (SPACE_ID set) with
persistent storage, the data folder and the Hugging Face cache (HF_HOME) live on /data, and public
mode is on. The Train tab launches jobs only with --enable-training (everywhere: it runs commands on
the host), which needs a login (--auth) whenever the app is reachable from other machines (public
mode, --share, or a --host that is not loopback). --share is public mode. See docs/public.md.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path

ENV_FLAGS = {"model": "STUDIO_MODEL", "backend": "STUDIO_BACKEND", "served_model_name": "STUDIO_SERVED_MODEL_NAME",
             "device": "STUDIO_DEVICE", "dtype": "STUDIO_DTYPE", "device_map": "STUDIO_DEVICE_MAP",
             "attn": "STUDIO_ATTN", "max_memory_gb": "STUDIO_MAX_MEMORY_GB"}
"""Flags a Space sets as variables (Settings > Variables): the flag wins when both are given."""


def use_persistent_cache(env=os.environ, data: Path = Path("/data")) -> str | None:
    """HF_HOME on the Space's persistent storage, so weights survive restarts. Must run before any
    Hugging Face library is imported (they read HF_HOME once); an HF_HOME already set is kept."""
    if env.get("SPACE_ID") and data.is_dir() and not env.get("HF_HOME"):
        env["HF_HOME"] = str(data / ".huggingface")
    return env.get("HF_HOME")


use_persistent_cache()


def build_parser() -> argparse.ArgumentParser:
    from core.backends import BACKENDS
    from core.media import DEFAULT_MAX_IMAGE_PIXELS

    p = argparse.ArgumentParser(prog="python app.py", description=__doc__)
    p.add_argument("--db", help="SQLite session log (default: data/studio.db; /data/studio/studio.db on Spaces)")
    p.add_argument("--model", help="hub id or local path (default: the embedded model); for openai, the base URL")
    p.add_argument("--backend", choices=BACKENDS, default="transformers")
    p.add_argument("--served-model-name", help="openai backend: the model name the server serves")
    p.add_argument("--device", help="transformers backend: cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: bf16 on a GPU that has it)")
    p.add_argument("--device-map", help="transformers backend: 'auto' spreads a large model over the GPUs")
    p.add_argument("--attn", help="transformers backend: sdpa (default), flash_attention_2, eager")
    p.add_argument("--max-memory-gb", type=float,
                   help="transformers backend: memory the weights may use (default: what the device has)")
    p.add_argument("--preload", action="store_true",
                   help="load the model at start, not at the first question (always on a Space)")
    p.add_argument("--replay", help="JSON list of assistant turns, for --backend replay")
    p.add_argument("--step-delay", type=float, default=0.0,
                   help="replay backend: seconds to wait before each turn (demos and crash tests)")
    p.add_argument("--host", default=None, help="default 127.0.0.1; 0.0.0.0 on Spaces")
    p.add_argument("--port", type=int, default=None, help="default 7860 (or GRADIO_SERVER_PORT)")
    p.add_argument("--enable-training", action="store_true", help="turn on the Train tab (launch SFT, RL and eval jobs)")
    p.add_argument("--share", action="store_true", help="a public gradio.live link")
    p.add_argument("--max-upload-mb", type=float, default=200.0)
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_IMAGE_PIXELS / 1e6,
                   help="images with more pixels are refused from their header, before decoding (memory cap)")
    p.add_argument("--max-concurrent", type=int, default=8, help="questions answered at once; more wait in line")
    p.add_argument("--public", action="store_true",
                   help="public mode (on by itself on a Hugging Face Space): each visitor sees only their own "
                        "sessions; import, annotate, export and delete are off unless --auth is given")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="require a login (repeatable; or STUDIO_AUTH='user:pw,user2:pw2'); logged-in users are "
                        "trusted operators: all features on")
    p.add_argument("--media-root", action="append", default=[], metavar="DIR",
                   help="a folder imports may read pictures from (repeatable); otherwise only uploaded files")
    add_limit_flags(p)
    p.set_defaults(**{flag: os.environ[var] for flag, var in ENV_FLAGS.items() if os.environ.get(var)})
    return p


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    """The bounds of docs/public.md's table that app/public/limits.py enforces."""
    from app.public.limits import ServerLimits

    d, v = ServerLimits(), ServerLimits().video
    g = p.add_argument_group("limits (see docs/public.md)")
    g.add_argument("--max-question-chars", type=int, default=d.max_question_chars,
                   help="longer questions are refused before they are queued")
    g.add_argument("--max-video-megapixels", type=float, default=v.max_pixels / 1e6,
                   help="pixels of every decoded video frame (not only the header's)")
    g.add_argument("--max-video-frames", type=int, default=v.max_frames, help="frames (packets) in a video")
    g.add_argument("--max-video-seconds", type=float, default=v.max_seconds, help="a video's duration")
    g.add_argument("--max-asks-per-visitor", type=int, default=d.max_asks_per_visitor,
                   help="public mode: questions and forks one visitor (login, else address) may have waiting or running")
    g.add_argument("--login-attempts", type=int, default=d.login_failures,
                   help="wrong passwords per minute per address or user name before /login answers 429")
    g.add_argument("--upload-ttl-min", type=float, default=d.upload_ttl_s / 60,
                   help="uploaded files older than this are deleted")
    g.add_argument("--max-upload-cache-gb", type=float, default=d.upload_cache_bytes / 1024 ** 3,
                   help="uploads are refused while the upload folder holds more")
    g.add_argument("--store-mb-per-visitor", type=float, default=d.store_bytes_per_visitor / 1024 ** 2,
                   help="public mode: stored pictures per visitor (their oldest finished sessions go first)")
    g.add_argument("--max-store-gb", type=float, default=d.store_bytes / 1024 ** 3,
                   help="public mode: stored pictures in all (the oldest finished visitor sessions go first)")
    g.add_argument("--store-keep-min", type=float, default=d.store_keep_s / 60,
                   help="public mode: a session is not evicted this soon after its last write")
    g.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                   help="a page origin served besides the request's own host (repeatable; on a Space its own "
                        "https://$SPACE_HOST is added by itself)")
    g.add_argument("--max-pages", type=int, default=d.max_visitors,
                   help="page sessions kept in memory (the oldest are forgotten)")


def server_limits(args):
    from app.public.limits import ServerLimits
    from core.frames import VideoLimits

    return ServerLimits(
        max_question_chars=args.max_question_chars, max_asks_per_visitor=max(1, args.max_asks_per_visitor),
        video=VideoLimits(max_pixels=int(args.max_video_megapixels * 1e6), max_frames=args.max_video_frames,
                          max_seconds=args.max_video_seconds),
        max_visitors=max(1, args.max_pages), login_failures=max(1, args.login_attempts),
        upload_ttl_s=int(args.upload_ttl_min * 60), upload_cache_bytes=int(args.max_upload_cache_gb * 1024 ** 3),
        store_bytes_per_visitor=int(args.store_mb_per_visitor * 1024 ** 2),
        store_bytes=int(args.max_store_gb * 1024 ** 3), store_keep_s=int(args.store_keep_min * 60),
        origins=list(args.allow_origin))


class ConfigError(SystemExit):
    """A combination of flags the app refuses to start with (the message says why)."""


def auth_pairs(args) -> list[tuple[str, str]]:
    """(user, password) pairs from --auth and STUDIO_AUTH; a malformed entry stops the app."""
    entries = list(args.auth) + [e for e in os.environ.get("STUDIO_AUTH", "").split(",") if e.strip()]
    pairs = []
    for e in entries:
        user, sep, password = e.strip().partition(":")
        if not sep or not user or not password:
            raise ConfigError("--auth / STUDIO_AUTH entries look like user:password")
        pairs.append((user, password))
    return pairs


def is_loopback(host: str | None) -> bool:
    """True for the default host and addresses only this machine reaches."""
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_flags(args, public: bool, pairs: list) -> None:
    """Refuse to expose the Train tab (it runs commands) beyond this machine without a login."""
    if args.enable_training and not pairs and (public or args.share or not is_loopback(args.host)):
        where = ("with --share" if args.share else "in public mode (--public or a Space)" if public
                 else f"on --host {args.host} (reachable from other machines)")
        raise ConfigError(f"--enable-training {where} needs a login: add --auth user:password "
                          "(the Train tab runs commands on this machine)")


def is_public(args) -> bool:
    """Public mode: --public, a Space, or --share (anyone with the link)."""
    return bool(args.public or args.share or os.environ.get("SPACE_ID"))


def make_studio(args):
    from app import Studio
    from app.shared.studio_log import StudioLog
    from core.sessionlog import default_data_dir, open_log

    db = Path(args.db) if args.db else default_data_dir() / "studio.db"
    log = open_log(db, cls=StudioLog)
    n = log.mark_unfinished()  # sessions a crash left running
    if n:
        logging.getLogger("studio").warning("marked %d sessions left running by a crash as unfinished", n)
    from core.cli import backend_options

    options = backend_options(args.backend, device=args.device, dtype=args.dtype, device_map=args.device_map,
                              attn_implementation=args.attn, model_name=args.served_model_name,
                              max_memory_gb=args.max_memory_gb)
    studio = Studio(log=log, data_dir=db.parent, backend=args.backend, model=args.model, replay=args.replay,
                    enable_training=args.enable_training, step_delay=args.step_delay,
                    max_upload_mb=args.max_upload_mb, backend_options=options,
                    max_image_pixels=int(args.max_megapixels * 1e6),
                    max_concurrent_runs=max(1, args.max_concurrent), public=is_public(args),
                    auth=bool(auth_pairs(args)), media_roots=[Path(r).resolve() for r in args.media_root],
                    limits=server_limits(args))
    if args.backend != "replay" and (args.preload or os.environ.get("SPACE_ID")):
        from app.ask.session import AskSettings, get_backend  # ZeroGPU wants the weights loaded before the first call
        from core.backends import BackendError

        try:
            get_backend(studio, AskSettings(backend=args.backend, model=args.model or ""))
        except BackendError as e:
            raise SystemExit(f"error: {e}") from None
    n = studio.jobs.reconcile()  # jobs a dead app left 'running' become failed (or done, from their exit file)
    if n:
        logging.getLogger("studio").warning("settled %d jobs left running by a stopped app", n)
    return studio


def main(argv: list[str] | None = None) -> None:
    from core.runtime import configure_threads

    configure_threads()  # before anything imports torch
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    from core.backends import BACKENDS

    if args.backend not in BACKENDS:  # STUDIO_BACKEND skips argparse's choices
        parser.error(f"unknown backend {args.backend!r} (STUDIO_BACKEND); choose one of {', '.join(BACKENDS)}")
    pairs = auth_pairs(args)
    check_flags(args, is_public(args), pairs)
    from core.sessionlog import StorageError

    try:
        studio = make_studio(args)
    except StorageError as e:  # one line naming the DB and why, not sqlite's bare message
        raise SystemExit(str(e)) from None
    from app.ask.session import preload_backend

    loading = preload_backend(studio)  # the model loads while gradio imports and the page builds
    from app.public.guard import guard_launch_kwargs
    from app.ui import build_app, launch_kwargs

    demo = build_app(studio)
    if loading is not None:  # serve once the model is ready, so the first Ask is as fast as the next
        loading.join()
    host = args.host or ("0.0.0.0" if os.environ.get("SPACE_ID") else None)
    demo.queue(default_concurrency_limit=studio.max_concurrent_runs).launch(
        server_name=host, server_port=args.port, share=args.share, auth=pairs or None,
        max_file_size=f"{int(args.max_upload_mb)}mb", **launch_kwargs(studio), **guard_launch_kwargs(studio, demo))


if __name__ == "__main__":
    main()
