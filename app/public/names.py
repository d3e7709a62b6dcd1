"""What a public visitor may see of the operator's setup: model names without server folders or
internal URLs. The operator's own model string (a replay file's path, an `http://127.0.0.1:.../v1`
endpoint) stays on the server; sessions made in public mode record the public name."""
from __future__ import annotations

import re

URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"`)]+", re.I)
ABS_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"`/]+/)+")


def public_model_name(model_id: str | None) -> str:
    """`replay:/srv/x/turns.json` -> `replay:turns.json`; `name@http://10.0.0.2:8000/v1` -> `name`;
    a bare URL -> `openai endpoint`; `/srv/runs/sft/final` -> `sft/final`; a hub id stays."""
    text = (model_id or "").strip()
    if "://" in text:
        name = text.split("@", 1)[0] if "@" in text.split("://", 1)[0] else ""
        return name or "openai endpoint"
    prefix, sep, rest = text.partition(":")
    if sep and "/" not in prefix:
        return f"{prefix}:{public_model_name(rest)}"
    if text.startswith(("/", "~", ".")):
        parts = [p for p in text.rstrip("/").split("/") if p not in ("", ".", "..", "~")]
        return "/".join(parts[-2:] if parts and parts[-1] == "final" else parts[-1:])
    return text


def scrub(text: str) -> str:
    """A message for a public visitor: URLs replaced, folders of absolute paths dropped."""
    return ABS_PATH.sub("", URL.sub("<endpoint>", text or ""))
