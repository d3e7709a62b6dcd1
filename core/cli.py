"""`python -m core ask ...`: ask one question about an image or video, streaming each step.
`python -m core fork TRAJECTORY.json --step K --box ...`: run a trajectory on from an edited step.
`python -m core eval ...`: run a benchmark (V* Bench, TallyQA, MVBench, InfoVQA, TinyZoom), resumable."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.backends import BACKENDS, BackendError, GenerationParams, load_backend
from core.loop import Done, LoopConfig, StepDone, StepStart, Task, TextDelta, run
from core.media import MediaError, Video, load_image
from core.operations import PIXEL_PRESETS, PixelLimits, resolve_pixel_preset
from core.trajectory import Trajectory


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """The model and how it samples: shared by `ask`, `eval` and `fork`."""
    p.add_argument("--backend", choices=BACKENDS, default="transformers", help="how the model runs (docs/backends.md)")
    p.add_argument("--model", help="hub id or local path (default: the embedded model); for openai, the base URL")
    p.add_argument("--replay", help="JSON list of assistant turns, for --backend replay")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="most tokens the model writes per turn")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (transformers backend)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (transformers, vllm)")
    p.add_argument("--device-map", default=None,
                   help="transformers backend: 'auto' spreads a large model over the GPUs (and CPU)")
    p.add_argument("--attn", default=None, help="transformers backend: sdpa (default), flash_attention_2, eager")
    p.add_argument("--served-model-name", default=None,
                   help="openai backend: the model name the server serves (default: the one /models lists)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Backend, sampling and loop options shared by `ask` and `eval` (a fork keeps its parent's loop)."""
    add_backend_args(p)
    p.add_argument("--no-tools", action="store_true", help="no tools block; the model answers from the input alone")
    p.add_argument("--max-ops", type=int, default=4,
                   help="most operations (crops, frame selections) per answer; the release runs at most 4")
    p.add_argument("--guideline", choices=["vcot", "default"], default="vcot",
                   help="the instruction after the question: vcot (the release's, asks for visual reasoning)")
    p.add_argument("--pixels", choices=sorted(PIXEL_PRESETS), default=None,
                   help="resolution preset (default: the model's own, else 'train')")


def backend_options(backend: str, **values) -> dict:
    """The options of `values` (None = unset) that the named backend takes."""
    takes = {"transformers": ("device", "dtype", "device_map", "attn_implementation", "max_memory_gb"),
             "vllm": ("dtype",), "openai": ("model_name",)}.get(backend, ())
    return {k: v for k, v in values.items() if k in takes and v is not None}


def backend_from_args(args) -> object:
    kwargs = backend_options(args.backend, device=args.device, dtype=args.dtype, device_map=args.device_map,
                             attn_implementation=args.attn, model_name=args.served_model_name)
    return load_backend(args.backend, model=args.model, replay=args.replay, **kwargs)


def loop_config_from_args(args, backend) -> LoopConfig:
    return LoopConfig(tools=not args.no_tools, guideline=args.guideline, max_ops=args.max_ops,
                      pixels=PixelLimits.preset(resolve_pixel_preset(args.pixels, backend.pixel_preset)))


def params_from_args(args) -> GenerationParams:
    return GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)


def stream_events(events, out) -> Trajectory:
    """Print each step as it streams (text, then the operation's outcome) and the answer line; the
    finished trajectory."""
    trajectory = None
    for event in events:
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
    return trajectory


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
    trajectory = stream_events(run(backend, task, config, params_from_args(args)),
                               sys.stderr if args.json else sys.stdout)
    if args.json:
        print(trajectory.to_json(indent=1))
    return 0 if trajectory.status != "error" else 1


# ---- fork ------------------------------------------------------------------------------------

def numbers(kind: type, count: int | None = None):
    """An argparse type: comma-separated numbers (`count` of them when given)."""
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}s") from None
        if count is not None and len(values) != count:
            raise argparse.ArgumentTypeError(f"{text!r}: give {count} numbers, not {len(values)}")
        return values
    return parse


def cmd_fork(args) -> int:
    from core.fork import Edit, ForkError, edited_step, run_fork, start_fork, task_of

    try:
        parent = Trajectory.from_json(Path(args.trajectory).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"error: {args.trajectory} is not a trajectory (what `python -m core ask --json` prints): "
              f"{type(e).__name__}: {str(e)[:160]}", file=sys.stderr)
        return 2
    try:
        edit = Edit(box=args.box, target_image=args.target_image, frames=args.frames, text=args.text)
        edited_step(parent, args.step, edit)  # a bad step or edit is refused before the model loads
        task = task_of(parent)
        backend = backend_from_args(args)
        episode, text = start_fork(backend, parent, args.step, edit, task)
    except (ForkError, MediaError, BackendError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    events = run_fork(backend, episode, text, params_from_args(args), scorer=parent.scorer or "text")
    trajectory = stream_events(events, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(trajectory.to_json(indent=1))
    return 0 if trajectory.status != "error" else 1


def add_fork_parser(sub) -> None:
    fk = sub.add_parser("fork", help="run a trajectory on from step K with that step's call or text edited",
                        description="Fork a trajectory (what `ask --json` prints) at step K: the steps before K "
                                    "are kept, step K's call is edited and run, the model goes on from there.")
    fk.add_argument("trajectory", metavar="TRAJECTORY.json")
    fk.add_argument("--step", type=int, required=True, help="the step to edit: its `index` in the trajectory")
    fk.add_argument("--box", type=numbers(float, 4), help="x1,y1,x2,y2: the crop's new bbox_2d (normalized "
                                                          "when all < 1, else pixels of the target image)")
    fk.add_argument("--target-image", type=int, help="the crop's new target_image (1 = the original)")
    fk.add_argument("--frames", type=numbers(int), help="3,5,7: select_frames' new target_frames")
    fk.add_argument("--text", help="the step's whole new text (reasoning and call, or an answer)")
    fk.add_argument("--json", action="store_true", help="print the forked trajectory as JSON on stdout")
    add_backend_args(fk)
    fk.set_defaults(func=cmd_fork)


# ---- eval ------------------------------------------------------------------------------------

def default_out(bench: str, model_id: str, tools: bool) -> Path:
    name = Path(model_id.rstrip("/")).name if model_id else "model"
    return Path("runs") / "eval" / f"{bench}-{name.replace(':', '_')}{'' if tools else '-notools'}"


def cmd_eval(args) -> int:
    from core.evaluation import EvalDataError, RunFolderError, evaluate, load_items, resolve_settings
    from core.sessionlog import SessionLog, default_data_dir

    if args.data is None and args.bench != "tinyzoom":
        print(f"error: --bench {args.bench} needs --data (the released parquet, or the folder holding it and its "
              "images); see docs/evaluation.md", file=sys.stderr)
        return 2
    data = Path(args.data or "data/tinyzoom").resolve()
    extra = {}
    if args.bench == "tinyzoom":
        extra = {"split": args.split, "categories": args.categories.split(",") if args.categories else None}
    elif args.categories or args.split != "test":
        print("error: --categories and --split apply to --bench tinyzoom only", file=sys.stderr)
        return 2
    if args.oracle_first_crop and args.bench != "tinyzoom":
        print("error: --oracle-first-crop needs items with meta.task.target: --bench tinyzoom", file=sys.stderr)
        return 2
    if args.samples < 1 or args.batch < 1:
        print("error: --samples and --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        items = load_items(args.bench, data, limit=args.limit, **extra)
        backend = backend_from_args(args)
        settings = resolve_settings(backend.pixel_preset, args.pixels, args.temperature,
                                    args.max_new_tokens, args.min_pixels, args.max_pixels,
                                    args.crop_min_pixels, args.crop_max_pixels)
    except (EvalDataError, BackendError, MediaError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = LoopConfig(tools=not args.no_tools, guideline=args.guideline, max_ops=args.max_ops, pixels=settings.pixels)
    params = GenerationParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, seed=args.seed)
    out = Path(args.out) if args.out else default_out(args.bench, backend.model_id, config.tools)
    log = None if args.no_db else SessionLog(args.db or default_data_dir() / "studio.db")
    try:
        result = evaluate(backend, items, args.bench, out, config, params, samples=args.samples, batch=args.batch,
                          session_log=log, progress=not args.quiet, data=str(data),
                          details={"pixel_preset": settings.pixel_preset, "settings_from": settings.source,
                                   "db": str(log.path) if log else None},
                          oracle_first_crop=args.oracle_first_crop)
    except RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished items are saved in {out}/items.jsonl; run the same command again to "
              "finish the rest", file=sys.stderr)
        return 130
    report = result.report
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        from core.evaluation import to_markdown
        print(to_markdown(report))
        print(f"report: {out / 'report.json'}  items: {out / 'items.jsonl'}  chart: {out / 'report.html'}")
    if result.n_failed:
        print(f"error: {result.n_failed} items failed in the backend ({result.failure}); run the same command "
              "again to retry them", file=sys.stderr)
        return 1
    return 0


def add_eval_parser(sub) -> None:
    from core.evaluation.benches import BENCHES

    ev = sub.add_parser("eval", help="run a benchmark; resumable (re-run the same command to continue)",
                        description="Evaluate a model on a benchmark; data layouts, the run folder and the report: "
                                    "docs/evaluation.md.")
    ev.add_argument("--bench", required=True, choices=list(BENCHES))
    ev.add_argument("--data", help="the released parquet (or its folder), or the TinyZoom folder "
                                   "(default for tinyzoom: data/tinyzoom)")
    ev.add_argument("--limit", type=int, default=None, help="only the first N questions")
    ev.add_argument("--samples", type=int, default=1, help="answers per question (use --temperature > 0)")
    ev.add_argument("--out", help="run folder (default runs/eval/<bench>-<model>[-notools])")
    ev.add_argument("--db", help="session log to add every trajectory to (default: the Studio's data/studio.db)")
    ev.add_argument("--no-db", action="store_true", help="do not write the session log")
    ev.add_argument("--batch", type=int, default=8, help="conversations advanced together (vLLM: 64-256)")
    ev.add_argument("--min-pixels", type=int, help="first image MIN_PIXELS (reproduction default 401408)")
    ev.add_argument("--max-pixels", type=int, help="first image MAX_PIXELS (reproduction default 4014080)")
    ev.add_argument("--crop-min-pixels", type=int, help="crops, min pixels (reproduction default 200704)")
    ev.add_argument("--crop-max-pixels", type=int, help="crops, max pixels (reproduction default 4014080)")
    ev.add_argument("--seed", type=int, default=None)
    ev.add_argument("--split", default="test", help="tinyzoom: test or validation")
    ev.add_argument("--categories", help="tinyzoom: comma-separated categories (default: all)")
    ev.add_argument("--oracle-first-crop", action="store_true",
                    help="what-if: each item's first crop is its meta.task.target box (on a video, the first "
                         "select_frames its visible frames); compare with a run without it")
    ev.add_argument("--json", action="store_true", help="print report.json instead of the markdown table")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(ev)
    # None: chosen by the checkpoint (studio.json preset: greedy, 128 tokens; else the release's 0.6, 2048)
    ev.set_defaults(func=cmd_eval, temperature=None, max_new_tokens=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="ask one question about an image or a video")
    ask.add_argument("--image", help="a picture file (PNG, JPEG, WebP, ...)")
    ask.add_argument("--video", help="a video file, or a folder of extracted frames")
    ask.add_argument("--frames", type=int, default=16, help="overview frames for a video")
    ask.add_argument("--question", required=True, help="the question about the picture or video")
    ask.add_argument("--json", action="store_true",
                     help="print the whole trajectory as JSON on stdout, with answer_confidence (0-1, null where the "
                          "backend gives no probabilities) and familiar (true/false, null where the model ships no "
                          "familiarity reference)")
    add_model_args(ask)
    ask.set_defaults(func=cmd_ask)
    add_eval_parser(sub)
    add_fork_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)
