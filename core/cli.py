"""`python -m core ask ...`: ask one question about an image or video, streaming each step."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.backends import BACKENDS, BackendError, GenerationParams, load_backend
from core.loop import Done, LoopConfig, StepDone, StepStart, Task, TextDelta, run
from core.media import MediaError, Video, load_image
from core.operations import PIXEL_PRESETS, PixelLimits


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Backend and sampling options shared by `ask` and `eval`."""
    p.add_argument("--backend", choices=BACKENDS, default="transformers")
    p.add_argument("--model", help="hub id or local path (default: the embedded model); for openai, the base URL")
    p.add_argument("--replay", help="JSON list of assistant turns, for --backend replay")
    p.add_argument("--no-tools", action="store_true", help="no tools block; the model answers from the input alone")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--max-ops", type=int, default=4)
    p.add_argument("--guideline", choices=["vcot", "default"], default="vcot")
    p.add_argument("--pixels", choices=sorted(PIXEL_PRESETS), default=None,
                   help="resolution preset (default: the model's own, else 'train')")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (transformers backend)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (transformers backend)")


def backend_from_args(args) -> object:
    kwargs = {}
    if args.backend == "transformers":
        kwargs = {k: v for k, v in (("device", args.device), ("dtype", args.dtype)) if v}
    return load_backend(args.backend, model=args.model, replay=args.replay, **kwargs)


def loop_config_from_args(args, backend) -> LoopConfig:
    preset = args.pixels or getattr(backend, "pixel_preset", None) or "train"
    return LoopConfig(tools=not args.no_tools, guideline=args.guideline, max_ops=args.max_ops,
                      pixels=PixelLimits.preset(preset))


def params_from_args(args) -> GenerationParams:
    return GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)


def cmd_ask(args) -> int:
    if bool(args.image) == bool(args.video):
        print("error: give exactly one of --image or --video", file=sys.stderr)
        return 2
    try:
        if args.image:
            task = Task(question=args.question, image=load_image(args.image), media_path=args.image)
        elif Path(args.video).is_dir():
            frames = sorted(p for p in Path(args.video).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
            task = Task(question=args.question, video=Video.from_frame_files(frames, n=args.frames), media_path=args.video)
        else:
            task = Task(question=args.question, video=Video.from_file(args.video, n=args.frames), media_path=args.video)
        backend = backend_from_args(args)
    except (MediaError, BackendError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = loop_config_from_args(args, backend)
    out = sys.stderr if args.json else sys.stdout
    trajectory = None
    for event in run(backend, task, config, params_from_args(args)):
        if isinstance(event, StepStart):
            print(f"\n--- step {event.index + 1} ---", file=out)
        elif isinstance(event, TextDelta):
            print(event.text, end="", file=out, flush=True)
        elif isinstance(event, StepDone):
            s = event.step
            if s.error:
                print(f"\n[error] {s.error}", file=out)
            elif s.tool == "select_frames":
                print(f"\n[select_frames] frames {s.frames}", file=out)
            elif s.tool:
                print(f"\n[{s.tool}] image {s.target_image} box_px {s.box_px} -> "
                      f"{s.images[0].width}x{s.images[0].height}", file=out)
        elif isinstance(event, Done):
            trajectory = event.trajectory
    print(f"\n\nanswer: {trajectory.answer}  ({trajectory.status}, {trajectory.n_ops} operations)", file=out)
    if trajectory.error:
        print(f"error: {trajectory.error}", file=sys.stderr)
    if args.json:
        print(trajectory.to_json(indent=1))
    return 0 if trajectory.status != "error" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="ask one question about an image or a video")
    ask.add_argument("--image")
    ask.add_argument("--video", help="a video file, or a folder of extracted frames")
    ask.add_argument("--frames", type=int, default=16, help="overview frames for a video")
    ask.add_argument("--question", required=True)
    ask.add_argument("--json", action="store_true", help="print the whole trajectory as JSON on stdout")
    add_model_args(ask)
    ask.set_defaults(func=cmd_ask)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)
