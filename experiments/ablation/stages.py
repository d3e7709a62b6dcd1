"""Runs the plan's stages in this process, each once: a finished stage leaves `<out>/done/<name>.json`
(its command, seconds, when) and a rerun skips it; an unfinished one starts over (RL, SFT, data) or
resumes by itself (evaluations keep their finished items)."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from experiments.ablation.mixes import write_mixes
from experiments.ablation.plan import Stage

log = logging.getLogger(__name__)


def marker(out: Path, stage: Stage) -> Path:
    return out / "done" / f"{stage.name}.json"


def call(stage: Stage) -> int:
    """The stage's command, in this process (one import of torch for the whole table)."""
    if stage.module == "mix":
        data, share = stage.argv
        log.info("mixes: %s", write_mixes(Path(data), float(share)))
        return 0
    if stage.module == "train":
        from train.__main__ import main
    elif stage.module == "core":
        from core.cli import main
    else:
        raise ValueError(f"unknown stage module {stage.module!r}")
    return int(main(list(stage.argv)) or 0)


def run_stages(out: Path, plan: list[Stage]) -> dict[str, float]:
    """Run what is not done yet; returns stage name -> seconds for every stage run now."""
    ran: dict[str, float] = {}
    for stage in plan:
        done = marker(out, stage)
        if done.exists():
            continue
        if stage.fresh and stage.out.exists() and stage.module != "mix":
            shutil.rmtree(stage.out)
        print(f"[{time.strftime('%H:%M:%S')}] {stage.name}: {stage.command()}", flush=True)
        t0 = time.time()
        rc = call(stage)
        if rc != 0:
            raise SystemExit(f"stage {stage.name} failed ({rc}): {stage.command()}")
        seconds = time.time() - t0
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps({"command": stage.command(), "seconds": round(seconds, 1),
                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
        ran[stage.name] = seconds
    return ran


def stage_seconds(out: Path, plan: list[Stage]) -> dict[str, float]:
    """Seconds each finished stage took (from the markers), whichever call ran it."""
    times = {}
    for stage in plan:
        path = marker(out, stage)
        if path.exists():
            times[stage.name] = json.loads(path.read_text())["seconds"]
    return times
