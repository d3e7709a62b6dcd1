"""The Studio layout: gr.Blocks with Tabs (Ask, Inspect, Annotate, Train) wired to the tab modules.

Only layout and event wiring live here; what the events do is in app/ask.py, app/inspector.py and
the Annotate/Train modules (app/annotate.py, app/train_tab.py), each built with `build(studio, ...)`.
"""
from __future__ import annotations

import logging
import secrets
from pathlib import Path

import gradio as gr

from app import ROOT, UI_ONLY, Studio
from app.annotate import tab as annotate
from app.training import tab as train_tab
from app.ask import session as A
from app.ask import examples as E
from app.inspecting import sessions as I
from core.backends import BACKENDS
from core.paths import is_token

logger = logging.getLogger(__name__)

CSS = """
#answer-status {font-size: 0.95em}
#sessions th, #sessions th *, #jobs th, #jobs th *, #annot-queue th, #annot-queue th * {
  word-break: normal !important; overflow-wrap: normal !important; white-space: nowrap !important}
.gradio-container {max-width: 1500px !important}
"""

OUTCOMES = [I.ANY, "correct", "incorrect", "unknown"]
EMBEDDED_NOTE = ("*The embedded model (9M parameters) learned only from synthetic TinyZoom pictures: small "
                 "number tags, coloured shapes, and signs that show in a few frames of a short video. Try the "
                 "examples or pictures like them; for real photos choose a real model in Settings.*")
YES_NO = [I.ANY, "yes", "no"]


def visitor(studio: Studio, request: gr.Request | None) -> str | None:
    """Who asks: the logged-in user, else the token the tab's browser keeps (see on_load), else the
    tab's (or API client's) Gradio session."""
    if request is None:
        return None
    user = getattr(request, "username", None)
    if user:
        return f"user:{user}"
    token = studio.visitors.get(request.session_hash)
    return f"visitor:{token}" if token else f"tab:{request.session_hash}"


def build_app(studio: Studio) -> gr.Blocks:
    gr.set_static_paths(studio.served_dirs())  # never the whole data folder: the DB lives there
    examples = E.load_examples(studio)
    default_backend = studio.backend
    default_model = studio.replay if studio.backend == "replay" else (studio.model or "")

    with gr.Blocks(title="Pixel Reasoner Studio") as demo:
        gr.Markdown("## Pixel Reasoner Studio — watch a VLM zoom and pick frames, step by step")
        with gr.Tabs(selected="ask") as tabs:
            # ---- Ask ----------------------------------------------------------------------------
            with gr.Tab("Ask", id="ask"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        media = gr.File(label="Image or video", file_types=["image", "video"], type="filepath",
                                        elem_id="media")
                        preview_img = gr.Image(label="Preview", type="filepath", interactive=False, height=220,
                                               visible=False, elem_id="media-preview", buttons=[])
                        preview_vid = gr.Video(label="Preview", interactive=False, height=220, visible=False,
                                               elem_id="media-preview-video")
                        question = gr.Textbox(label="Question", lines=2, elem_id="question",
                                              placeholder="What is written on the small sign?")
                        with gr.Row():
                            ask_btn = gr.Button("Ask", variant="primary", elem_id="ask-btn")
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                        gallery = gr.Gallery([(E.thumbnail(studio, e["media"]), e["label"]) for e in examples],
                                             label="Examples (click one)",
                                             columns=3, height=260, allow_preview=False, elem_id="examples",
                                             buttons=[])
                        with gr.Accordion("Settings", open=False, elem_id="ask-settings"):
                            backend = gr.Dropdown(list(BACKENDS), value=default_backend, label="Backend")
                            model = gr.Textbox(value=default_model, label="Model", elem_id="ask-model",
                                               placeholder="empty = embedded model; hub id, local path, "
                                                           "OpenAI URL, or (replay) a JSON file of turns")
                            tools = gr.Checkbox(True, label="Visual operations (tools) on")
                            compare = gr.Checkbox(False, label="Compare: also run with tools off")
                            temperature = gr.Slider(0, 1.5, value=0.0, step=0.05, label="Temperature")
                            max_ops = gr.Slider(1, 8, value=4, step=1, label="Max operations")
                            max_new = gr.Slider(16, 2048, value=512, step=16, label="Max new tokens per turn")
                            guideline = gr.Radio(["vcot", "default"], value="vcot", label="Guideline variant")
                    with gr.Column(scale=3):
                        gr.Markdown(EMBEDDED_NOTE, elem_id="model-note")
                        status = gr.Markdown("", elem_id="answer-status")
                        chat = gr.Chatbot(label="Reasoning", height=640, elem_id="chat", feedback_options=None,
                                          buttons=["copy_all"], group_consecutive_messages=False)
                        chat_off = gr.Chatbot(label="Compare: tools off", height=300, elem_id="chat-off",
                                              feedback_options=None, visible=False)

                def ask(media_path, q, backend_name, model_name, tools_on, temp, ops, new_tokens, guide, cmp,
                        request: gr.Request):
                    if studio.isolate:  # visitors use the operator's model: no server paths or URLs from them
                        backend_name, model_name = default_backend, default_model
                    try:
                        settings = A.AskSettings(
                            backend=backend_name, model=model_name or "", tools=bool(tools_on),
                            temperature=min(max(float(temp or 0), 0.0), 1.5), max_ops=min(max(int(ops), 1), 8),
                            guideline=guide if guide in ("vcot", "default") else "vcot",
                            max_new_tokens=min(max(int(new_tokens), 16), 2048), compare=bool(cmp))
                    except (TypeError, ValueError):
                        yield [], [], "⚠️ the settings must be numbers within the sliders' ranges"
                        return
                    yield from A.ask_stream(studio, media_path, q, settings, request.session_hash,
                                            E.expected_answer(examples, media_path), visitor(studio, request))

                def pick_example(evt: gr.SelectData):
                    e = examples[evt.index]
                    return e["media"], e["question"]

                def show_preview(path):
                    video = bool(path) and Path(path).suffix.lower() in E.VIDEO_SUFFIXES
                    return (gr.update(value=path if path and not video else None, visible=bool(path) and not video),
                            gr.update(value=path if video else None, visible=video))

                def stop(request: gr.Request):
                    n = A.stop(studio, request.session_hash)
                    return "stopping…" if n else "nothing is running"

                ask_btn.click(ask, [media, question, backend, model, tools, temperature, max_ops, max_new, guideline,
                                    compare], [chat, chat_off, status], api_name="ask",
                              concurrency_limit=studio.max_concurrent_runs)
                stop_btn.click(stop, None, status, api_name="stop", concurrency_limit=None)
                gallery.select(pick_example, None, [media, question], **UI_ONLY)
                media.change(show_preview, media, [preview_img, preview_vid], **UI_ONLY)
                compare.change(lambda c: gr.update(visible=c), compare, chat_off, **UI_ONLY)

            # ---- Inspect --------------------------------------------------------------------------
            with gr.Tab("Inspect", id="inspect"):
                with gr.Row():
                    search = gr.Textbox(label="Search question and reasoning", scale=3)
                    f_model = gr.Dropdown([I.ANY] + studio.log.models(), value=I.ANY, label="Model",
                                          allow_custom_value=True, scale=2)
                    f_outcome = gr.Dropdown(OUTCOMES, value=I.ANY, label="Outcome", scale=1)
                    f_errors = gr.Dropdown(YES_NO, value=I.ANY, label="Has errors", scale=1)
                    f_annot = gr.Dropdown(YES_NO, value=I.ANY, label="Annotated", scale=1)
                with gr.Row():
                    f_min = gr.Number(0, label="Min ops", precision=0, minimum=0, scale=1)
                    f_max = gr.Number(99, label="Max ops", precision=0, minimum=0, scale=1)
                    f_since = gr.Textbox(label="Since (YYYY-MM-DD)", scale=1)
                    f_until = gr.Textbox(label="Until (YYYY-MM-DD, inclusive)", scale=1, elem_id="f-until")
                    page = gr.Number(1, label="Page", precision=0, minimum=1, scale=1, elem_id="page")
                    search_btn = gr.Button("Search", variant="primary", scale=1, elem_id="search-btn")
                    refresh_btn = gr.Button("↻ Refresh", scale=1, elem_id="inspect-refresh")
                    live = gr.Checkbox(True, label="Live (new sessions every 5 s)", scale=1)
                table_info = gr.Markdown(elem_id="table-info")
                table = gr.Dataframe(headers=I.TABLE_COLUMNS, interactive=False, wrap=True, max_height=360,
                                     elem_id="sessions", datatype=["str", "str", "str", "html"] + ["str"] * 6,
                                     column_widths=["14%", "11%", "25%", "10%", "7%", "8%", "7%", "5%", "7%", "6%"])
                with gr.Row():
                    session_id = gr.Textbox(label="Session id (click a row, or paste; ?session=<id> links here)",
                                            scale=4, elem_id="session-id")
                    open_btn = gr.Button("Open", scale=1)
                header = gr.Markdown()
                with gr.Row():
                    replay = gr.Plot(label="Source image with every crop box (hover: original pixels)")
                    with gr.Column():
                        step_no = gr.Slider(1, 2, value=1, step=1, label="Step", elem_id="step-no")
                        picture = gr.Image(label="What this step did", type="pil", height=360)
                raw = gr.Code(label="Raw model text of this step", language="markdown", lines=8, elem_id="step-raw")
                steps = gr.Dataframe(headers=I.STEP_COLUMNS, interactive=False, label="Steps: tokens and timings")
                with gr.Row():
                    timeline = gr.Plot()
                    timings = gr.Plot()
                with gr.Accordion("Side by side: two trajectories of the same question", open=False):
                    with gr.Row():
                        cmp_a = gr.Textbox(label="A (session id)")
                        cmp_b = gr.Dropdown([], label="B (same question; or paste an id)", allow_custom_value=True)
                        cmp_btn = gr.Button("Compare")
                    cmp_out = gr.Markdown()
                with gr.Accordion("Charts", open=False):
                    charts_btn = gr.Button("Refresh charts")
                    with gr.Row():
                        c_ops, c_lat = gr.Plot(), gr.Plot()
                    with gr.Row():
                        c_time, c_model = gr.Plot(), gr.Plot()
                if studio.admin:
                    with gr.Accordion("Import trajectories (`python -m core ask --json` output, a list, or JSONL; "
                                      "add the pictures they name as files beside them)", open=False):
                        files = gr.File(file_count="multiple", file_types=[".json", ".jsonl", "image", "video"],
                                        type="filepath")
                        import_btn = gr.Button("Import")
                        import_out = gr.Markdown()

                filters = [search, f_model, f_outcome, f_min, f_max, f_errors, f_annot, f_since, f_until, page]

                def scope(request: gr.Request | None) -> str | None:
                    """The owner to filter by: this visitor in public mode, nobody otherwise."""
                    return (visitor(studio, request) or "") if studio.isolate else None

                def owned(sid, request: gr.Request | None) -> str:
                    """The session id when this visitor may see it; KeyError (as for an unknown id) if not."""
                    sid = (sid or "").strip() if isinstance(sid, str) else ""
                    owner = scope(request)
                    if owner is not None:
                        row = studio.log.session(sid)
                        if row is None or row.get("owner") != owner:
                            raise KeyError(f"no session {sid[:80]!r}")
                    return sid

                def list_sessions(text, model_name, outcome, mn, mx, errs, annot, since, until, pg, sid=None,
                                  request: gr.Request = None):
                    try:
                        f = I.make_filter(text, model_name, outcome, mn, mx, errs, annot, since, until, pg or 1)
                    except (ValueError, TypeError, OverflowError) as e:
                        return gr.update(), f"⚠️ {e}", gr.update()
                    f.owner = scope(request)
                    rows, info = I.sessions_page(studio.log, f, (sid or "").strip() or None)
                    return rows, info, gr.update(choices=[I.ANY] + studio.log.models())

                def poll_sessions(on, shown, text, model_name, outcome, mn, mx, errs, annot, since, until, pg, sid,
                                  request: gr.Request = None):
                    """The timer: redraw the table only when its rows changed (new or finished sessions)."""
                    if not on:
                        return gr.skip(), gr.skip(), gr.skip(), shown
                    rows, info, models = list_sessions(text, model_name, outcome, mn, mx, errs, annot, since, until,
                                                       pg, sid, request)
                    if not isinstance(rows, list) or rows == shown:
                        return gr.skip(), gr.skip(), gr.skip(), shown
                    return rows, info, models, rows

                def open_session(sid, step=1, request: gr.Request = None):
                    try:
                        sid = owned(sid, request)
                        v = I.session_view(studio.log, sid, step)
                    except KeyError as e:
                        return (f"⚠️ {e}",) + (gr.update(),) * 9
                    partners = [p for p in I.same_question(studio.log, sid) if scope(request) is None
                                or (studio.log.session(p) or {}).get("owner") == scope(request)]
                    n = v["n_steps"]  # a slider needs two stops: a one-step session has none
                    slider = gr.update(minimum=1, maximum=max(2, n), value=min(step, max(n, 1)), visible=n > 1,
                                       label=f"Step (1–{n})")
                    return (v["header"], v["replay"], slider,
                            v["picture"], v["raw"], v["steps"], v["timeline"], v["timings"], sid.strip(),
                            gr.update(choices=partners, value=partners[0] if partners else None))

                def show_step(sid, step, request: gr.Request):
                    try:
                        v = I.session_view(studio.log, owned(sid, request), int(step))
                    except (KeyError, TypeError, ValueError):
                        return gr.update(), gr.update(), gr.update()
                    return v["replay"], v["picture"], v["raw"]

                def pick_row(evt: gr.SelectData):
                    return I.row_id(evt.row_value[0]) if evt.row_value else gr.update()

                def compare_two(a, b, request: gr.Request):
                    try:
                        return I.compare_markdown(studio.log, owned(a, request), owned(b, request))
                    except KeyError as e:
                        return f"⚠️ {e}"

                def refresh_charts(text, model_name, outcome, mn, mx, errs, annot, since, until, pg,
                                   request: gr.Request):
                    from app.shared import charts as C
                    try:
                        f = I.make_filter(text, model_name, outcome, mn, mx, errs, annot, since, until)
                    except (ValueError, TypeError, OverflowError):
                        f = I.make_filter()
                    f.owner = scope(request)
                    s = studio.log.stats(f)
                    return (C.ops_per_session(s["ops"]), C.latency_per_step(s["latency"]),
                            C.rapr_over_time(s["rapr_by_day"]), C.rapr_by_model(s["rapr_by_model"]))

                session_outputs = [header, replay, step_no, picture, raw, steps, timeline, timings, cmp_a, cmp_b]
                listed = [table, table_info, f_model]
                search_btn.click(list_sessions, filters, listed, api_name="sessions")
                search.submit(list_sessions, filters + [session_id], listed, **UI_ONLY)
                refresh_btn.click(list_sessions, filters + [session_id], listed, **UI_ONLY)
                shown_rows = gr.State(None)
                gr.Timer(5).tick(poll_sessions, [live, shown_rows] + filters + [session_id], listed + [shown_rows],
                                 show_progress="hidden", **UI_ONLY)
                table.select(pick_row, None, session_id, **UI_ONLY) \
                    .then(open_session, session_id, session_outputs, **UI_ONLY) \
                    .then(list_sessions, filters + [session_id], listed, **UI_ONLY)
                open_btn.click(open_session, session_id, session_outputs, api_name="open_session")
                session_id.submit(open_session, session_id, session_outputs, **UI_ONLY)
                step_no.input(show_step, [session_id, step_no], [replay, picture, raw], trigger_mode="always_last",
                              **UI_ONLY)
                cmp_btn.click(compare_two, [cmp_a, cmp_b], cmp_out, api_name="compare")
                charts_btn.click(refresh_charts, filters, [c_ops, c_lat, c_time, c_model], api_name="charts")
                if studio.admin:
                    import_btn.click(lambda p: I.import_files(studio.log, p, studio.media_roots), files, import_out,
                                     api_name="import")

            # ---- Annotate and Train (built by their own modules) ------------------------------------
            with gr.Tab("Annotate", id="annotate"):
                if studio.admin:
                    annotate.build(studio, session_id=session_id, demo=demo)
                else:
                    gr.Markdown("Annotation, export and import are off in public mode. The operator turns them "
                                "on by requiring a login: `python app.py --public --auth user:password` "
                                "(see docs/public.md).")
            with gr.Tab("Train", id="train"):
                if studio.enable_training:
                    train_tab.build(studio, demo=demo, ask_model=model)
                else:
                    gr.Markdown("Training is off. Start the app with `python app.py --enable-training` to launch "
                                "SFT, RL and evaluation jobs from here (they run as commands on this machine).")

        visitor_token = gr.BrowserState("", storage_key="studio-visitor")

        def on_load(token, request: gr.Request):
            """Deep link ?session=<id>: open the Inspect tab on that session; else show the newest page.
            The browser's visitor token (made here on a first visit) is tied to this tab's session."""
            if not (isinstance(token, str) and is_token(token)):
                token = secrets.token_hex(16)
            with studio.lock:
                studio.visitors[request.session_hash] = token
            first = I.make_filter()
            first.owner = scope(request)
            rows, info = I.sessions_page(studio.log, first)
            sid = (request.query_params.get("session") or "").strip() if request else ""
            if sid:
                return (token, gr.Tabs(selected="inspect"), rows, info, sid) + open_session(sid, 1, request)
            return (token, gr.update(), rows, info, gr.update()) + (gr.update(),) * len(session_outputs)

        demo.load(on_load, visitor_token, [visitor_token, tabs, table, table_info, session_id] + session_outputs,
                  **UI_ONLY)

        def on_unload(request: gr.Request):
            """A closed tab stops its runs; their sessions end 'unfinished' with every finished step kept."""
            A.stop(studio, request.session_hash, reason="closed")
            with studio.lock:
                studio.visitors.pop(request.session_hash, None)

        demo.unload(on_unload)
    return demo


def launch_kwargs(studio: Studio | None = None) -> dict:
    """Styling for launch(); with the studio, also the paths Gradio must never serve."""
    from app.annotate.tab import SHORTCUTS_JS

    kw = {"css": CSS, "theme": gr.themes.Soft(), "head": SHORTCUTS_JS}
    if studio is not None:
        kw["blocked_paths"] = [str(p) for p in studio.private_paths()]
    return kw
