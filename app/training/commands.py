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
    "data": "generate TinyZoom (train + held-out test split) into the Dataset folder (default data/tinyzoom): the "
            "records a corrections fine-tune mixes in and the gain view's own split (both build it when missing)",
    "gain": "a finished run (Model: `data/runs/<job>`) against its start model on the same items: its corrections "
            "asked again (trained on), items like them never trained on (held out), its own TinyZoom split",
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
        return J.train_command(kind, config, out, dataset, model, extra_args + mix_here(studio, config, extra_args))
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
        base, tuned, export, own = gain_inputs(model, held_out(studio))  # a Dataset given is the own folder
        return J.gain_command(out, base, tuned, export, dataset or own, [], int(limit) if limit else None, extra_args)
    if kind == "custom":
        cmd = shlex.split(custom or "")
        if not cmd:
            raise ValueError("type the command to run")
        return [J.python() if c == "python" else c for c in cmd]
    raise ValueError(f"unknown job kind {kind!r}")


def gain_inputs(run: str, own: str) -> tuple[str, str, str | None, str]:
    """(start model, fine-tuned model, its training data, the own TinyZoom folder) of a finished sft/rl
    run folder: the start is the `model` its config recorded, the own folder the `mix_data` it mixed
    in (else `own`, where the data job writes TinyZoom)."""
    folder = Path(run)
    ran = next((folder / f"{k}_config.json" for k in ("sft", "rl") if (folder / f"{k}_config.json").exists()), None)
    if ran is None:
        raise ValueError(f"{run} is not a finished sft/rl run folder (no sft_config.json or rl_config.json)")
    cfg = json.loads(ran.read_text())
    tuned = cfg.get("final_dir") or str(folder / "final")
    if cfg.get("model") in (None, "tiny"):
        raise ValueError(f"{run} trained a model from scratch: there is no start model to compare with")
    data = cfg.get("data") if cfg.get("data") and Path(cfg["data"]).is_dir() else None
    return cfg["model"], tuned, data, (cfg.get("mix_data") if cfg.get("mix_records") else None) or own


def run_config(config: str | None, overrides: list[str]) -> dict:
    """The fields a config file (relative to the repository) and its key=value overrides give."""
    path = ROOT / config if config else None
    cfg = json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else {}
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            cfg[key] = json.loads(value)
        except ValueError:
            cfg[key] = value
    return cfg


def mix_here(studio: Studio, config: str, extra: list[str]) -> list[str]:
    """`mix_data=<data>/tinyzoom` for a fine-tune that mixes records in and names no mix folder of its
    own on the command line: the Studio's own TinyZoom folder, where the data job writes it and the
    gain view finds the own split."""
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if not run_config(config, overrides).get("mix_records") or any(e.startswith("mix_data=") for e in overrides):
        return []
    return [f"mix_data={held_out(studio)}"]


def setup_note(kind: str, cmd: list[str]) -> str | None:
    """What a job builds before it starts (a fresh set-up): the mix folder of a fine-tune, the own
    split of a gain job; what it cannot use; None when the folder is there."""
    args = dict(a.split("=", 1) for a in cmd if "=" in a and not a.startswith("-"))
    if kind == "sft" and args.get("mix_data"):
        folder, need, what = args["mix_data"], "train.jsonl", "the model's own kind of data to mix in"
        refused = "the fine-tune stops there: give mix_data=<a TinyZoom folder>, or mix_records=0"
    elif kind == "gain" and "--own" in cmd:
        folder, need, what = cmd[cmd.index("--own") + 1], "test.jsonl", "its own split: is anything forgotten?"
        refused = "the gain view scores the other parts only"
    else:
        return None
    path = ROOT / folder
    if (path / need).is_file():
        return None
    if path.is_dir() and any(path.iterdir()):
        return f"⚠️ `{folder}` holds no {need} and is not written into: {refused}."
    return (f"ℹ️ `{folder}` is not built yet: this job first writes TinyZoom there ({what}; "
            f"`python -m train synth --out {folder} {' '.join(J.FRESH_SYNTH)}`, about a minute on 2 cores).")


def size_warning(kind: str, config: str | None, cmd: list[str]) -> str | None:
    """The tiny-data warning of an SFT command (app.training.gain.training_size_warning), its data
    resolved as `train sft` resolves it and the records it mixes in counted."""
    from app.training import gain as G
    from core.records import DataError, newest_dataset

    if kind != "sft":
        return None
    if not config or not (ROOT / config).is_file():
        return None
    cfg = run_config(config, [c for c in cmd if "=" in c and not c.startswith("-")])
    try:
        folder = newest_dataset(ROOT / cfg["data"]) if cfg.get("data") else None
    except (DataError, OSError):
        return None
    return G.training_size_warning(cfg, G.count_records(str(folder) if folder else None), mixed=mix_count(cfg))


def mix_count(cfg: dict) -> int:
    """How many records a fine-tune will mix in: mix_records, at most what its mix folder holds (or
    will hold once built)."""
    want = int(cfg.get("mix_records") or 0)
    if not want or not cfg.get("mix_data"):
        return 0
    from app.training import gain as G

    held = G.count_records(str(ROOT / cfg["mix_data"]))
    return min(want, J.FRESH_TRAIN if held is None else held)


def before_start(kind: str, config: str | None, cmd: list[str]) -> str:
    """What the form says before a job starts: what it builds first, and the tiny-data warning."""
    return "\n\n".join(n for n in (setup_note(kind, cmd), size_warning(kind, config, cmd)) if n)
