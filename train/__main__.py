"""`python -m train <command> ...`: the training commands, each a module with `main(argv) -> int`.

To add a command, add one entry to COMMANDS (e.g. "rl": ("train.rl", "what it does")); modules are imported only
when their command runs, so a missing optional dependency of one command never breaks another.
"""
from __future__ import annotations

import importlib
import sys

from core.runtime import configure_threads

COMMANDS = {
    "synth": ("train.synth.build", "write the synthetic TinyZoom dataset (or the robustness shift suite)"),
    "sft": ("train.sft", "supervised fine-tuning on multi-turn, multi-image traces"),
    "rl": ("train.rl", "curiosity-driven GRPO with tool-loop rollouts"),
    "vision": ("train.vision", "pre-train the tiny vision tower on per-token labels (before sft)"),
    "shift-report": ("train.shift_report", "evaluate a model over the robustness shift suite"),
    "familiarity": ("train.familiarity", "compute a checkpoint's familiarity reference from its training data"),
}


def usage() -> str:
    """The commands, one line each, and where each one's options are."""
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: python -m train {{{','.join(COMMANDS)}}} [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "run `python -m train <command> --help` for a command's options"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    configure_threads()  # before a command imports torch
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(usage(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return int(importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
