"""The Inspect tab's layout and events, one section each: the filters and the sessions table, one
session's panel, side by side, charts, and (for operators) the import of runs made elsewhere. What
the events show is computed in app/inspecting/sessions.py and app/shared/."""
from __future__ import annotations

from typing import Callable

import gradio as gr

from app import UI_ONLY, Studio
from app.inspecting import sessions as I
from app.inspecting.fork_panel import ForkPanel
from app.inspecting.charts import stats_figures
from app.public.names import public_model_name
from app.shared import importers
from app.shared.filters import ANY, OUTCOMES, make_filter
from app.shared.visitors import visitor
from core.backends.base import Backend

YES_NO = [ANY, "yes", "no"]


def build(studio: Studio, backend: Callable[[], Backend] | None = None) -> "InspectTab":
    """The tab's content (inside its gr.Tab); the page's load event and Annotate use what it returns.
    `backend()` gives the model forks run on (the Studio's default)."""
    tab = InspectTab(studio)
    tab.sessions_table()
    tab.session_panel()
    tab.fork_panel(backend)
    tab.side_by_side()
    tab.charts()
    if studio.admin:
        tab.importer()
    tab.wire_table()
    return tab


class InspectTab:
    """The tab's sections (each lays out its components and wires its own events) and its handlers."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.log = studio.log

    # ---- who may see what ------------------------------------------------------------------------------

    def scope(self, request: gr.Request | None) -> str | None:
        """The owner to filter by: this visitor in public mode, nobody otherwise."""
        return (visitor(self.studio, request) or "") if self.studio.isolate else None

    def owned(self, sid, request: gr.Request | None) -> str:
        """The session id when this visitor may see it; KeyError (as for an unknown id) if not."""
        sid = (sid or "").strip() if isinstance(sid, str) else ""
        owner = self.scope(request)
        if owner is not None:
            row = self.log.session(sid)
            if row is None or row.get("owner") != owner:
                raise KeyError(f"no session {sid[:80]!r}")
        return sid

    def models(self) -> list[str]:
        """The model filter's choices: in public mode the public names visitors' sessions carry."""
        names = self.log.models()
        return sorted({public_model_name(m) for m in names}) if self.studio.isolate else names

    # ---- the filters and the sessions table -----------------------------------------------------------

    def sessions_table(self) -> None:
        with gr.Row():
            self.search = gr.Textbox(label="Search question and reasoning", scale=3)
            f_model = gr.Dropdown([ANY] + self.models(), value=ANY, label="Model", allow_custom_value=True,
                                  scale=2)
            f_outcome = gr.Dropdown(OUTCOMES, value=ANY, label="Outcome", scale=1)
            f_errors = gr.Dropdown(YES_NO, value=ANY, label="Has errors", scale=1)
            f_annot = gr.Dropdown(YES_NO, value=ANY, label="Annotated", scale=1)
        with gr.Row():
            f_min = gr.Number(0, label="Min ops", precision=0, minimum=0, scale=1)
            f_max = gr.Number(99, label="Max ops", precision=0, minimum=0, scale=1)
            f_since = gr.Textbox(label="Since (YYYY-MM-DD)", scale=1)
            f_until = gr.Textbox(label="Until (YYYY-MM-DD, inclusive)", scale=1, elem_id="f-until")
            page = gr.Number(1, label="Page", precision=0, minimum=1, scale=1, elem_id="page")
            self.search_btn = gr.Button("Search", variant="primary", scale=1, elem_id="search-btn")
            self.refresh_btn = gr.Button("↻ Refresh", scale=1, elem_id="inspect-refresh")
            self.live = gr.Checkbox(True, label="Live (new sessions every 5 s)", scale=1)
        self.table_info = gr.Markdown(elem_id="table-info")
        self.table = gr.Dataframe(headers=I.TABLE_COLUMNS, interactive=False, wrap=True, max_height=360,
                                  elem_id="sessions", datatype=["str", "str", "str", "html"] + ["str"] * 6,
                                  column_widths=["14%", "11%", "25%", "10%", "7%", "8%", "7%", "5%", "7%", "6%"])
        self.f_model = f_model
        self.filters = [self.search, f_model, f_outcome, f_min, f_max, f_errors, f_annot, f_since, f_until, page]

    def list_sessions(self, text, model_name, outcome, mn, mx, errs, annot, since, until, pg, sid=None,
                      request: gr.Request = None):
        try:
            f = make_filter(text, model_name, outcome, mn, mx, errs, annot, since, until, pg or 1)
        except (ValueError, TypeError, OverflowError) as e:
            return gr.update(), f"⚠️ {e}", gr.update()
        f.owner = self.scope(request)
        rows, info = I.sessions_page(self.log, f, (sid or "").strip() or None)
        return rows, info, gr.update(choices=[ANY] + self.models())

    def poll_sessions(self, on, shown, text, model_name, outcome, mn, mx, errs, annot, since, until, pg, sid,
                      request: gr.Request = None):
        """The timer: redraw the table only when its rows changed (new or finished sessions)."""
        if not on:
            return gr.skip(), gr.skip(), gr.skip(), shown
        rows, info, models = self.list_sessions(text, model_name, outcome, mn, mx, errs, annot, since, until,
                                                pg, sid, request)
        if not isinstance(rows, list) or rows == shown:
            return gr.skip(), gr.skip(), gr.skip(), shown
        return rows, info, models, rows

    def first_page(self, request: gr.Request) -> tuple[list[list], str]:
        """The newest page, as the page first shows it."""
        first = make_filter()
        first.owner = self.scope(request)
        return I.sessions_page(self.log, first)

    def wire_table(self) -> None:
        """Search, Refresh and the live timer redraw the table; a row, Open or Enter opens a session."""
        filters, sid = self.filters, self.session_id
        listed = [self.table, self.table_info, self.f_model]
        self.search_btn.click(self.list_sessions, filters, listed, api_name="sessions")
        self.search.submit(self.list_sessions, filters + [sid], listed, **UI_ONLY)
        self.refresh_btn.click(self.list_sessions, filters + [sid], listed, **UI_ONLY)
        shown_rows = gr.State(None)
        gr.Timer(5).tick(self.poll_sessions, [self.live, shown_rows] + filters + [sid], listed + [shown_rows],
                         show_progress="hidden", **UI_ONLY)
        self.table.select(pick_row, None, sid, **UI_ONLY) \
            .then(self.open_session, sid, self.session_outputs, **UI_ONLY) \
            .then(self.list_sessions, filters + [sid], listed, **UI_ONLY)
        self.open_btn.click(self.open_session, sid, self.session_outputs, api_name="open_session")
        sid.submit(self.open_session, sid, self.session_outputs, **UI_ONLY)

    # ---- one session ---------------------------------------------------------------------------------

    def session_panel(self) -> None:
        with gr.Row():
            self.session_id = gr.Textbox(label="Session id (click a row, or paste; ?session=<id> links here)",
                                         scale=4, elem_id="session-id")
            open_btn = gr.Button("Open", scale=1)
        header = gr.Markdown()
        with gr.Column(visible=False) as details:  # nothing of a session shows before one is opened
            with gr.Row():
                replay = gr.Plot(label="Source image with every crop box (hover: original pixels)",
                                 elem_id="session-replay")
                with gr.Column():
                    step_no = gr.Slider(1, 2, value=1, step=1, label="Step", elem_id="step-no")
                    picture = gr.Image(label="What this step did", type="pil", height=360)
            raw = gr.Code(label="Raw model text of this step", language="markdown", lines=8, elem_id="step-raw")
            unsure = gr.HighlightedText(label="Where the model was unsure: tokens it gave p < 0.5 (none marked: "
                                              "sure throughout; empty: the backend gave no probabilities)",
                                        show_legend=False, combine_adjacent=False, elem_id="step-unsure")
            steps = gr.Dataframe(headers=I.STEP_COLUMNS, interactive=False,
                                 label="Steps: tokens, how sure (mean log-probability per token), timings")
            with gr.Row():
                timeline = gr.Plot(visible=False, elem_id="session-timeline")  # shown for a video session only
                timings = gr.Plot(elem_id="session-timings")
        self.session_outputs = [header, replay, step_no, picture, raw, unsure, steps, timeline, timings, details]
        step_no.input(self.show_step, [self.session_id, step_no], [replay, picture, raw, unsure],
                      trigger_mode="always_last", **UI_ONLY)
        self.open_btn = open_btn

    def open_session(self, sid, step=1, request: gr.Request = None):
        try:
            sid = self.owned(sid, request)
            v = I.session_view(self.log, sid, step)
        except KeyError as e:
            return (f"⚠️ {e}",) + (gr.update(),) * 11
        owner = self.scope(request)
        partners = [p for p in I.same_question(self.log, sid)
                    if owner is None or (self.log.session(p) or {}).get("owner") == owner]
        n = v["n_steps"]  # a slider needs two stops: a one-step session has none
        slider = gr.update(minimum=1, maximum=max(2, n), value=min(step, max(n, 1)), visible=n > 1,
                           label=f"Step (1–{n})")
        video = bool(v["trajectory"].media.frame_times)
        return (v["header"], v["replay"], slider, v["picture"], v["raw"], v["unsure"], v["steps"],
                gr.update(value=v["timeline"], visible=video), v["timings"], gr.Column(visible=True), sid.strip(),
                gr.update(choices=partners, value=partners[0] if partners else None))

    def show_step(self, sid, step, request: gr.Request):
        try:
            v = I.session_view(self.log, self.owned(sid, request), int(step))
        except (KeyError, TypeError, ValueError):
            return gr.update(), gr.update(), gr.update(), gr.update()
        return v["replay"], v["picture"], v["raw"], v["unsure"]

    def fork_panel(self, backend: Callable[[], Backend] | None) -> None:
        """Fork from the step shown (app/inspecting/fork_panel.py); the table redraws after a fork."""
        self.fork = ForkPanel(self.studio, backend, self.scope)
        self.fork.build()
        header, step_no = self.session_outputs[0], self.session_outputs[2]
        refresh = {"fn": self.list_sessions, "inputs": self.filters + [self.session_id],
                   "outputs": [self.table, self.table_info, self.f_model], **UI_ONLY}
        self.fork.wire(self.session_id, step_no, header, refresh)

    # ---- side by side, charts, import -------------------------------------------------------------------

    def side_by_side(self) -> None:
        with gr.Accordion("Side by side: two trajectories of the same question", open=False):
            with gr.Row():
                cmp_a = gr.Textbox(label="A (session id)")
                cmp_b = gr.Dropdown([], label="B (same question; or paste an id)", allow_custom_value=True)
                cmp_btn = gr.Button("Compare")
            cmp_out = gr.Markdown()
        self.session_outputs += [cmp_a, cmp_b]  # opening a session fills A and offers its partners as B

        def compare_two(a, b, request: gr.Request):
            try:
                return I.compare_markdown(self.log, self.owned(a, request), self.owned(b, request))
            except KeyError as e:
                return f"⚠️ {e}"

        cmp_btn.click(compare_two, [cmp_a, cmp_b], cmp_out, api_name="compare")

    def charts(self) -> None:
        with gr.Accordion("Charts", open=False):
            charts_btn = gr.Button("Refresh charts")
            with gr.Row():
                c_ops, c_lat = gr.Plot(), gr.Plot()
            with gr.Row():
                c_time, c_model = gr.Plot(), gr.Plot()

        def refresh_charts(text, model_name, outcome, mn, mx, errs, annot, since, until, pg, request: gr.Request):
            try:
                f = make_filter(text, model_name, outcome, mn, mx, errs, annot, since, until)
            except (ValueError, TypeError, OverflowError):
                f = make_filter()
            f.owner = self.scope(request)
            return stats_figures(self.log.stats(f))

        charts_btn.click(refresh_charts, self.filters, [c_ops, c_lat, c_time, c_model], api_name="charts")

    def importer(self) -> None:
        with gr.Accordion("Import trajectories (`python -m core ask --json` output, a list, or JSONL; "
                          "add the pictures they name as files beside them)", open=False):
            files = gr.File(file_count="multiple", file_types=[".json", ".jsonl", "image", "video"], type="filepath")
            import_btn = gr.Button("Import")
            import_out = gr.Markdown()
        import_btn.click(lambda p: importers.import_files(self.log, p, self.studio.media_roots), files, import_out,
                         api_name="import")


def pick_row(evt: gr.SelectData):
    return I.row_id(evt.row_value[0]) if evt.row_value else gr.update()
