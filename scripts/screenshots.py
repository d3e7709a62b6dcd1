"""Regenerate the README's screenshots (docs/screenshots/{ask,inspect,annotate,train}.png).

    python scripts/screenshots.py [--out docs/screenshots]

Runs the browser test that walks the Studio's loop (tests/test_app_browser.py) with
STUDIO_SCREENSHOTS pointing at the folder; the tests alone write screenshots to a temporary folder,
so running the suite never changes tracked files. Needs Debian's chromium and playwright (python).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/test_app_browser.py::test_the_loop_ask_annotate_export_finetune_evaluate_compare"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for the four PNGs")
    args = ap.parse_args(argv)
    env = {**os.environ, "STUDIO_SCREENSHOTS": str(Path(args.out).resolve())}
    code = subprocess.call([sys.executable, "-m", "pytest", TEST, "-q", "-x", "-p", "no:cacheprovider"],
                           cwd=ROOT, env=env)
    if code == 0:
        for name in ("ask", "inspect", "annotate", "train"):
            print(Path(args.out) / f"{name}.png")
    return code


if __name__ == "__main__":
    sys.exit(main())
