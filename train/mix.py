"""Mixing a model's original kind of data into a fine-tune (`python -m train sft`: `mix_data`, `mix_records`).

A fine-tune on a few dozen corrections alone teaches the correction and forgets much of the rest
(docs/corrections.md); drawing some records of the data the model was trained on into the same run
keeps most of it. The draw is `random.Random(seed).sample` over the mix folder's train.jsonl, so a
run's seed decides which records join and a rerun draws the same ones.

A mix folder that does not exist yet is built first with the Studio's small TinyZoom set
(`FRESH`: the Train tab's data job writes the same folder), so a corrections fine-tune works on a
fresh clone without a separate data step.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

from core.records import DataError, SFTRecord, load_sft_records

log = logging.getLogger(__name__)

FRESH = {"train": 400, "validation": 0, "test": 64, "seed": 0}
"""The small TinyZoom set a missing mix folder is built with: 400 training records to draw from and
64 held-out test items (the Train tab's gain view scores them as the model's own split). The Train
tab's data job (`app/training/jobs.py: synth_command`) writes the same."""


def fresh_command(folder: str | Path) -> str:
    """The command that builds `folder` as a missing mix folder is built (for messages)."""
    sizes = " ".join(f"--{k} {v}" for k, v in FRESH.items())
    return f"python -m train synth --out {folder} {sizes}"


def build_fresh(folder: Path) -> None:
    """Build the Studio's small TinyZoom set into `folder` (which must not hold anything yet)."""
    from train.run import is_main_process
    from train.synth.build import BuildConfig, build

    if not is_main_process():
        raise DataError(f"mix_data {folder} does not exist; build it before a distributed run: {fresh_command(folder)}")
    log.info("mix_data %s does not exist yet: building it (%s)", folder, fresh_command(folder))
    build(BuildConfig(out=str(folder), workers=1, progress=False, **FRESH))


def mix_pool(folder: str | Path) -> list[SFTRecord]:
    """The training records of a mix folder, built first when the folder is missing or empty; a
    DataError when it holds something else (a folder without train.jsonl is never written into)."""
    folder = Path(folder)
    if not (folder / "train.jsonl").is_file():
        if folder.exists() and any(folder.iterdir()):
            raise DataError(f"mix_data {folder} has no train.jsonl (give a TinyZoom folder, e.g. one written by "
                            f"`{fresh_command(folder)}`)")
        build_fresh(folder)
    return load_sft_records(folder, "train")


def draw(pool: list[SFTRecord], n: int, seed: int) -> list[SFTRecord]:
    """`n` records of `pool` drawn without replacement with `seed` (all of them when it has fewer), in
    the pool's order."""
    if n >= len(pool):
        return list(pool)
    keep = set(random.Random(seed).sample(range(len(pool)), n))
    return [rec for i, rec in enumerate(pool) if i in keep]


def mix_in(records: list[SFTRecord], mix_data: str | None, mix_records: int, seed: int) -> tuple[list[SFTRecord], int]:
    """(the run's records followed by `mix_records` drawn from `mix_data`, how many were drawn)."""
    if not mix_data or mix_records <= 0:
        return records, 0
    pool = mix_pool(mix_data)
    extra = draw(pool, mix_records, seed)
    if len(extra) < mix_records:
        log.warning("mix_data %s holds %d training records, fewer than mix_records=%d: all of them are mixed in",
                    mix_data, len(pool), mix_records)
    return records + extra, len(extra)
