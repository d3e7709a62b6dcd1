"""The Studio page: gr.Blocks with one tab per folder (app/ask, app/inspecting, app/annotate,
app/training), each built by its own `build`, and the page's load and unload events. The map of
app/ is at the top of docs/app.md."""
from __future__ import annotations

import secrets

import gradio as gr

from app import UI_ONLY, Studio
from app.public.limits import remember_visitor
from app.annotate import tab as annotate_tab
from app.annotate.keys import SHORTCUTS_JS
from app.ask import session as ask_session
from app.ask import tab as ask_tab
from app.inspecting import tab as inspect_tab
from app.training import tab as train_tab
from core.paths import is_token

CSS = """
#answer-status {font-size: 0.95em}
#sessions th, #sessions th *, #jobs th, #jobs th *, #annot-queue th, #annot-queue th * {
  word-break: normal !important; overflow-wrap: normal !important; white-space: nowrap !important}
.gradio-container {max-width: 1500px !important}
#chat label[data-testid=block-label], #chat-off label[data-testid=block-label] {position: static !important}
#chat video, #chat-off video {max-width: 420px !important; max-height: 320px !important}
"""
ANNOTATE_OFF = ("Annotation, export and import are off in public mode. The operator turns them on by requiring a "
                "login: `python app.py --public --auth user:password` (see docs/public.md).")
TRAIN_OFF = ("Training is off. Start the app with `python app.py --enable-training` to launch SFT, RL and "
             "evaluation jobs from here (they run as commands on this machine).")


def build_app(studio: Studio) -> gr.Blocks:
    gr.set_static_paths(studio.served_dirs())  # never the whole data folder: the DB lives there
    with gr.Blocks(title="Pixel Reasoner Studio") as demo:
        gr.Markdown("## Pixel Reasoner Studio — watch a VLM zoom and pick frames, step by step")
        with gr.Tabs(selected="ask") as tabs:
            with gr.Tab("Ask", id="ask"):
                ask_model = ask_tab.build(studio)
            with gr.Tab("Inspect", id="inspect"):
                inspect = inspect_tab.build(studio, backend=lambda: ask_session.default_backend(studio))
            with gr.Tab("Annotate", id="annotate"):
                if studio.admin:
                    annotate_tab.build(studio, session_id=inspect.session_id, demo=demo)
                else:
                    gr.Markdown(ANNOTATE_OFF)
            with gr.Tab("Train", id="train") as train_page:
                if studio.enable_training:
                    train_tab.build(studio, demo=demo, ask_model=ask_model, page=train_page)
                else:
                    gr.Markdown(TRAIN_OFF)
        wire_page(studio, demo, tabs, inspect)
    return demo


def wire_page(studio: Studio, demo: gr.Blocks, tabs: gr.Tabs, inspect: inspect_tab.InspectTab) -> None:
    """Load: the visitor's token, the newest sessions, and a deep link. Unload: stop the tab's runs."""
    visitor_token = gr.BrowserState("", storage_key="studio-visitor")

    def on_load(token, request: gr.Request):
        """Deep link ?session=<id>: open the Inspect tab on that session; else show the newest page.
        The browser's visitor token (made here on a first visit) is tied to this tab's session."""
        if not (isinstance(token, str) and is_token(token)):
            token = secrets.token_hex(16)
        with studio.lock:
            remember_visitor(studio.visitors, request.session_hash, token, studio.limits.max_visitors)
        rows, info = inspect.first_page(request)
        sid = (request.query_params.get("session") or "").strip() if request else ""
        if sid:
            return (token, gr.Tabs(selected="inspect"), rows, info, sid) + inspect.open_session(sid, 1, request)
        return (token, gr.update(), rows, info, gr.update()) + (gr.update(),) * len(inspect.session_outputs)

    def on_unload(request: gr.Request):
        """A closed tab stops its runs; their sessions end 'unfinished' with every finished step kept."""
        ask_session.stop(studio, request.session_hash, reason="closed")
        with studio.lock:
            studio.visitors.pop(request.session_hash, None)

    demo.load(on_load, visitor_token,
              [visitor_token, tabs, inspect.table, inspect.table_info, inspect.session_id] + inspect.session_outputs,
              **UI_ONLY)
    demo.unload(on_unload)


def launch_kwargs(studio: Studio | None = None) -> dict:
    """Styling for launch(); with the studio, also the paths Gradio must never serve."""
    kw = {"css": CSS, "theme": gr.themes.Soft(), "head": SHORTCUTS_JS}
    if studio is not None:
        kw["blocked_paths"] = [str(p) for p in studio.private_paths()]
    return kw
