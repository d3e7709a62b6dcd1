"""What a Train job runs: the configs and datasets the form offers, and the exact argv of each job
kind (sft, rl, eval, data, gain, custom), with a clear error for what is missing."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from app import ROOT, Studio
from app.training import jobs as J

BENCHES = ["tinyzoom", "vstar", "tallyqa", "mvbench", "infovqa"]


KIND_HELP = {
    "sft": "fine-tune on a dataset (an annotation export, with its trained-turn masks); the default config starts "
           "from the embedded model, or the checkpoint in Model",
    "rl": "curiosity GRPO from the checkpoint in Model (default: the config's)",
    "eval": "a benchmark on one model (Model: empty = embedded)",
    "data": "generate TinyZoom (train + held-out test split) into the Dataset folder (default data/tinyzoom)",
    "gain": "a finished run (Model: `data/runs/<job>`) against its start model on the same held-out items",
    "custom": "any command (argv, no shell)",
}


def configs(kind: str) -> list[str]:
    """configs/<kind>_*.json, relative to the repository (what the commands take)."""
    if kind not in ("sft", "rl"):
        return []
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob(f"{kind}_*.json"))


def datasets(studio: Studio) -> list[str]:
    """Folders with a train.jsonl under data/ (synthetic sets) and the annotation exports."""
    found: dict[str, None] = {}
    for base in (ROOT / "data", studio.data_dir, studio.data_dir / "exports"):
        if base.is_dir():
            for d in sorted(base.iterdir()):
                if (d / "train.jsonl").exists() or (d / "test.jsonl").exists():
                    found[_short(d)] = None
    return list(found)


def newest_export(studio: Studio) -> str | None:
    """The annotation export made last (<data>/exports/<name> with a train.jsonl), None before any."""
    root = studio.data_dir / "exports"
    found = [d for d in root.iterdir() if (d / "train.jsonl").is_file()] if root.is_dir() else []
    return _short(max(found, key=lambda d: (d / "train.jsonl").stat().st_mtime)) if found else None


def dataset_choice(studio: Studio, current: str | None) -> tuple[list[str], str | None]:
    """(choices, value) of the Dataset field when the Train tab is shown: the newest export is
    pre-selected unless another dataset was chosen (a chosen export gives way to a newer one)."""
    newest = newest_export(studio)
    exports = _short(studio.data_dir / "exports")
    chosen_other = bool(current) and not str(current).startswith(exports)
    return datasets(studio), (current if chosen_other or newest is None else newest)


def _short(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


DEFAULT_CONFIG = {"sft": "configs/sft_corrections.json", "rl": "configs/rl_tiny.json"}


def held_out(studio: Studio) -> str:
    """Where the 'data' job writes TinyZoom and where 'gain' finds its test split: <data>/tinyzoom."""
    return _short(studio.data_dir / "tinyzoom")


def default_config(kind: str) -> str | None:
    cfgs = configs(kind)
    return DEFAULT_CONFIG.get(kind) if DEFAULT_CONFIG.get(kind) in cfgs else (cfgs or [None])[0]


def build_command(studio: Studio, kind: str, config: str | None, dataset: str | None, bench: str | None,
                  model: str | None, limit, extra: str, custom: str, out: str) -> list[str]:
    """The argv for a job; ValueError says what is missing."""
    extra_args = shlex.split(extra or "")
    dataset = (dataset or "").strip() or None
    model = (model or "").strip() or None
    if kind in ("sft", "rl"):
        if not config:
            raise ValueError(f"choose a config (configs/{kind}_*.json)")
        return J.train_command(kind, config, out, dataset, model, extra_args)
    if kind == "eval":
        if not bench:
            raise ValueError("choose a benchmark")
        return J.eval_command(bench, out, dataset, model, int(limit) if limit else None, extra_args)
    if kind == "data":
        return J.synth_command(out, dataset or held_out(studio), extra_args)
    if kind == "gain":
        if not model:
            raise ValueError("give the run to evaluate (data/runs/<job>) in the Model field, or select a finished "
                             "fine-tune job and press 'Evaluate against its start model'")
        base, tuned, data = gain_inputs(model, dataset or held_out(studio))
        if not any((ROOT / d / "test.jsonl").is_file() for d in data):
            raise ValueError(f"no held-out items to compare on: {', '.join(data)} has no test.jsonl. Build TinyZoom "
                             "first (the 'data' job writes its test split there), or give a dataset with a test.jsonl")
        return J.gain_command(out, base, tuned, data, int(limit) if limit else None, extra_args)
    if kind == "custom":
        cmd = shlex.split(custom or "")
        if not cmd:
            raise ValueError("type the command to run")
        return [J.python() if c == "python" else c for c in cmd]
    raise ValueError(f"unknown job kind {kind!r}")


def gain_inputs(run: str, tinyzoom: str) -> tuple[str, str, list[str]]:
    """(start model, fine-tuned model, held-out folders) of a finished sft/rl run folder: the start is
    the `model` its config recorded; the held-out items are TinyZoom's test split and the export's
    own held-out test.jsonl (when the run trained on an export that has one)."""
    folder = Path(run)
    ran = next((folder / f"{k}_config.json" for k in ("sft", "rl") if (folder / f"{k}_config.json").exists()), None)
    if ran is None:
        raise ValueError(f"{run} is not a finished sft/rl run folder (no sft_config.json or rl_config.json)")
    cfg = json.loads(ran.read_text())
    tuned = cfg.get("final_dir") or str(folder / "final")
    if cfg.get("model") in (None, "tiny"):
        raise ValueError(f"{run} trained a model from scratch: there is no start model to compare with")
    data = [tinyzoom]
    if cfg.get("data") and (Path(cfg["data"]) / "test.jsonl").exists() and cfg["data"] not in data:
        data.append(cfg["data"])
    return cfg["model"], tuned, data


def size_warning(kind: str, config: str | None, cmd: list[str]) -> str | None:
    """The tiny-data warning of an SFT command (app.training.gain.training_size_warning), its data
    resolved as `train sft` resolves it."""
    from app.training import gain as G
    from core.records import DataError, newest_dataset

    if kind != "sft":
        return None
    overrides = [c for c in cmd if "=" in c and not c.startswith("-")]
    data = next((c.split("=", 1)[1] for c in overrides if c.startswith("data=")), None)
    if data is None and config and (ROOT / config).is_file():
        data = json.loads((ROOT / config).read_text(encoding="utf-8")).get("data")
    try:
        folder = newest_dataset(ROOT / data) if data else None
    except (DataError, OSError):
        return None
    config_path = str(ROOT / config) if config else None
    return G.training_size_warning(config_path, overrides, G.count_records(str(folder) if folder else None))
