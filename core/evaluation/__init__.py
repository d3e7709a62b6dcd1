"""Benchmark evaluation: V* Bench, TallyQA-Complex, MVBench, InfoVQA and TinyZoom.

    python -m core eval --bench vstar --data VStar-EvalData-PixelReasoner --model TIGER-Lab/PixelReasoner-RL-v1 \
        --backend vllm --out runs/eval/vstar

Modules: `data` (loaders for the released parquet layout and TinyZoom), `benches` (scoring and
the paper's figures), `settings` (resolution and sampling defaults by checkpoint), `store` (the
resumable run folder), `runner` (batched, resumable `evaluate`), `report` (metrics, bootstrap
interval, markdown), `chart` (the plotly figure the app shows).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BENCHES": "benches", "score": "benches", "report_figure": "chart", "EvalDataError": "data",
    "EvalItem": "data", "load_items": "data", "summarize": "report", "to_markdown": "report",
    "EvalResult": "runner", "evaluate": "runner", "resolve_settings": "settings", "RunFolderError": "store",
}
"""Imported on first use, so `python -m core ask` (which lists the benches) needs neither
sqlite-utils nor plotly."""


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'core.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"core.evaluation.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
