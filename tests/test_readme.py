"""The README's cheap commands run as written: each is taken from the page itself, so a renamed flag or
module fails here before a newcomer meets it."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# commands that need no data, no GPU and at most a few seconds of CPU
CHEAP = (
    "python -m core --help",
    "python -m train --help",
    "python -m train sft --help",
    'python -m core ask --image assets/examples/zoom_needed_101.png --question "What is written on the blue tag?"',
)


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks, comments cut, continuations joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(re.sub(r"\s+", " ", line))
    return lines


def test_the_readme_is_short_and_shows_its_two_first_commands():
    assert len(README.splitlines()) <= 260
    first = readme_commands()[:2]
    assert first == ["pip install -r requirements.txt && python app.py",
                     "pip install -r requirements-dev.txt && python -m pytest -q"]


def test_every_document_the_readme_links_exists():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    assert links
    assert [link for link in links if not link.startswith("http") and not (ROOT / link).exists()] == []


@pytest.mark.parametrize("command", CHEAP)
def test_a_cheap_readme_command_runs(command):
    assert command in readme_commands()
    argv = shlex.split(command)
    out = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    if "ask" in argv:
        assert out.stdout.strip().splitlines()[-1].startswith("answer: 3")  # the embedded model reads the tag
    else:
        assert "usage:" in out.stdout
