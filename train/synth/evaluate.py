"""`python -m train tinyzoom-eval ...`: an alias of `python -m core eval --bench tinyzoom ...`.

The TinyZoom evaluation lives in core/evaluation (one harness for every benchmark: batched,
resumable, per-category report, session log). Every option is passed through, e.g.

    python -m train tinyzoom-eval --data data/tinyzoom --no-tools --categories zoom_needed --out runs/eval_notools
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    import sys

    from core.cli import main as core_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n")
    return core_main(["eval", "--bench", "tinyzoom", *argv])
