"""Who asks: every tab that keeps sessions apart per visitor (public mode) names them the same way."""
from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from app import Studio


def visitor(studio: Studio, request: gr.Request | None) -> str | None:
    """Who asks: the logged-in user, else the token the tab's browser keeps (see app/ui.py's on_load),
    else the tab's (or API client's) Gradio session."""
    if request is None:
        return None
    user = getattr(request, "username", None)
    if user:
        return f"user:{user}"
    token = studio.visitors.get(request.session_hash)
    return f"visitor:{token}" if token else f"tab:{request.session_hash}"
