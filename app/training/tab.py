"""The Train tab (only with `python app.py --enable-training`): launch SFT, RL and evaluation jobs
as subprocesses of the real commands, watch them, cancel them.

Jobs live in SQLite (`jobs`) and on disk (`<data>/runs/<job id>/`: job.log, metrics.jsonl,
progress.json, exit_code), so a page reload, a second browser or a restarted app re-attaches to
them. A gr.Timer polls the selected job every 2 s; the curves are redrawn only when new metric
rows arrive.

Each section lays out its part; the wire_* methods connect them. What a job runs is in
app/training/commands.py, what the tab shows of it in app/training/watch.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from app import UI_ONLY, Studio
from app.training import alarms as AL
from app.training import charts as C
from app.training import gain as G
from app.training import jobs as J
from app.training.commands import (BENCHES, KIND_HELP, before_start, build_command, configs, dataset_choice, datasets,
                                   default_config)
from app.training.watch import (JOB_COLUMNS, gain_of, job_markdown, jobs_table, progress_html, rl_alarms,
                                rl_curves)

POLL_SECONDS = 2.0


def build(studio: Studio, demo=None, ask_model=None, page=None) -> None:
    """The tab's content (inside its gr.Tab `page`); `ask_model` is Ask's Model field, for 'Use this model in
    Ask'. Showing the tab offers the datasets made meanwhile, the newest export chosen."""
    tab = TrainTab(studio)
    with gr.Column(elem_id="train-root"):
        tab.job_form()
        tab.jobs_list(ask_model)
        tab.job_view()
    tab.wire_launch()
    tab.wire_jobs(ask_model)
    tab.wire_view()
    if demo is not None:
        demo.load(tab.preview, tab.inputs + [tab.planned], tab.previewed, **UI_ONLY)
    if page is not None:
        page.select(tab.show_datasets, tab.dataset, tab.dataset, **UI_ONLY)


def visibility(k: str) -> tuple:
    """(config, bench, model, limit, custom) updates for a job kind."""
    return (gr.update(choices=configs(k), value=default_config(k), visible=k in ("sft", "rl")),
            gr.update(visible=k == "eval"),
            gr.update(visible=k in ("sft", "rl", "eval", "gain"),
                      label={"gain": "Run to evaluate (data/runs/<job>)"}.get(k, "Model (empty = the config's; "
                                                                                 "eval: the embedded model)")),
            gr.update(visible=k in ("eval", "gain")), gr.update(visible=k == "custom"))


def on_kind(k):
    return (*visibility(k), KIND_HELP.get(k, ""))


class TrainTab:
    """The tab's sections and its event handlers (methods, so the sections share the components)."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.runner = studio.jobs

    def show_datasets(self, current):
        choices, value = dataset_choice(self.studio, current)
        return gr.update(choices=choices, value=value)

    # ---- the job form: what to run, the exact command, Launch -------------------------------------------

    def job_form(self) -> None:
        with gr.Row():
            self.kind = gr.Radio(list(J.KINDS), value="sft", label="Job", scale=3, elem_id="train-kind")
            self.config = gr.Dropdown(configs("sft"), value=default_config("sft"), label="Config",
                                      allow_custom_value=True, scale=2, elem_id="train-config")
            self.dataset = gr.Dropdown(datasets(self.studio), value=None,
                                       label="Dataset (data/… or an annotation export)", allow_custom_value=True,
                                       scale=3, elem_id="train-dataset")
            self.refresh_ds = gr.Button("↻", scale=0, min_width=40)
        self.kind_md = gr.Markdown(KIND_HELP["sft"])
        with gr.Row():
            self.bench = gr.Dropdown(BENCHES, value="tinyzoom", label="Benchmark (eval)", scale=1, visible=False)
            self.model = gr.Textbox(label="Model (empty = the config's; eval: the embedded model)", scale=2,
                                    elem_id="train-model")
            self.limit = gr.Number(None, label="Limit (items per held-out set)", precision=0, scale=1,
                                   visible=False, elem_id="train-limit")
            self.extra = gr.Textbox(label="Extra arguments (key=value … or --flags)", scale=3, elem_id="train-extra")
        self.custom = gr.Textbox(label="Custom command (kind 'custom'; argv, no shell)", visible=False)
        self.command = gr.Code(label="Command that will run (exactly)", language="shell", lines=2, wrap_lines=True,
                               elem_id="train-command")
        self.warning = gr.Markdown(elem_id="train-warning")  # before launch: a run that would overfit tiny data
        self.planned = gr.State(None)  # the job id (and out folder) the preview shows and Launch uses
        self.previewed = [self.command, self.warning, self.planned]
        with gr.Row():
            self.launch_btn = gr.Button("Launch", variant="primary", elem_id="train-launch")
            self.parallel = gr.Checkbox(False, label="Allow beside a running job")
            self.cancel_btn = gr.Button("Cancel job", variant="stop", elem_id="train-cancel")
        self.launch_md = gr.Markdown(elem_id="train-launched")
        self.inputs = [self.kind, self.config, self.dataset, self.bench, self.model, self.limit, self.extra,
                       self.custom]

    def wire_launch(self) -> None:
        """Every field redraws the command; a kind shows its fields; Launch and Cancel."""
        inputs, planned = self.inputs, self.planned
        for c in inputs:
            c.change(self.preview, inputs + [planned], self.previewed, **UI_ONLY)
        self.kind.change(on_kind, self.kind,
                         [self.config, self.bench, self.model, self.limit, self.custom, self.kind_md], **UI_ONLY)
        self.refresh_ds.click(lambda: gr.update(choices=datasets(self.studio)), None, self.dataset, **UI_ONLY)
        self.launch_btn.click(self.launch, inputs + [planned, self.parallel],
                              [self.launch_md, self.table, self.job_id, planned], api_name="train_launch") \
            .then(self.preview, inputs + [planned], self.previewed, **UI_ONLY)
        self.cancel_btn.click(self.cancel, self.job_id, [self.launch_md, self.table], api_name="train_cancel")

    def preview(self, k, cfg, ds, b, m, lim, ex, cu, plan):
        """The command Launch will run, a warning where the run would overfit tiny data, and the out
        folder it will use (kept in `planned`)."""
        plan = plan if plan and plan.split("-")[2] == k else self.runner.new_out_dir(k)[0]
        try:
            cmd = build_command(self.studio, k, cfg, ds, b, m, lim, ex, cu, str(self.runner.runs_dir / plan))
        except ValueError as e:
            return f"# {e}", "", plan
        return J.preview(cmd), before_start(k, cfg, cmd), plan

    def launch(self, k, cfg, ds, b, m, lim, ex, cu, plan, allow_parallel):
        running = self.studio.log.list_jobs(status="running")
        if running and not allow_parallel:
            return (f"⚠️ job `{running[0]['id']}` is running; cancel it or tick 'Allow beside'", gr.update(),
                    gr.update(), plan)
        fresh = plan and plan.split("-")[2] == k and self.studio.log.get_job(plan) is None
        job = plan if fresh else self.runner.new_out_dir(k)[0]
        out = self.runner.runs_dir / job
        try:
            cmd = build_command(self.studio, k, cfg, ds, b, m, lim, ex, cu, str(out))
        except ValueError as e:
            return f"⚠️ {e}", gr.update(), gr.update(), plan
        self.runner.launch(k, cmd, out, dataset=(ds or "").strip() or None, job_id=job)
        warning = before_start(k, cfg, cmd)
        return f"launched `{job}`" + (f"\n\n{warning}" if warning else ""), jobs_table(self.studio), job, None

    def cancel(self, jid):
        jid = (jid or "").strip()
        if not jid:
            return "choose a job first", gr.update()
        ok = self.runner.cancel(jid)
        return (f"cancelled `{jid}`" if ok else f"`{jid}` is not running"), jobs_table(self.studio)

    # ---- the jobs table: pick a job, evaluate its gain, use its model -------------------------------------

    def jobs_list(self, ask_model) -> None:
        self.table = gr.Dataframe(headers=JOB_COLUMNS, value=lambda: jobs_table(self.studio), interactive=False,
                                  max_height=260, elem_id="jobs")
        with gr.Row():
            self.job_id = gr.Textbox(label="Job (click a row)", elem_id="job-id", scale=3)
            self.gain_btn = gr.Button("Evaluate against its start model", elem_id="train-gain", scale=1)
            self.use_btn = gr.Button("Use this model in Ask", elem_id="train-use", scale=1)
        self.job_md = gr.Markdown()
        self.gain_md = gr.Markdown(elem_id="train-gain-result")

    def wire_jobs(self, ask_model) -> None:
        self.gain_btn.click(self.evaluate_run, [self.job_id, self.limit, self.parallel],
                            [self.launch_md, self.table, self.job_id, self.kind, self.model, self.limit],
                            api_name="train_gain")
        if ask_model is not None:
            self.use_btn.click(self.use_model, self.job_id, [self.launch_md, ask_model], **UI_ONLY)
        else:
            self.use_btn.visible = False
        self.table.select(pick, None, self.job_id, **UI_ONLY)

    def finished_run(self, jid) -> dict:
        job = self.studio.log.get_job((jid or "").strip())
        if job is None or job["kind"] not in ("sft", "rl") or job["status"] != "done":
            raise ValueError("select a finished sft or rl job first")
        return job

    def evaluate_run(self, jid, lim, allow_parallel):
        """One click: a 'gain' job for the selected run, with the same fields a typed one uses."""
        try:
            job = self.finished_run(jid)
        except ValueError as e:
            return (f"⚠️ {e}",) + (gr.update(),) * 5
        k, m, lim = "gain", job["out_dir"], int(lim or 16)
        plan = self.runner.new_out_dir(k)[0]
        msg, rows, new_id, _ = self.launch(k, None, None, None, m, lim, "", "", plan, allow_parallel)
        return msg, rows, new_id, gr.update(value=k), gr.update(value=m), gr.update(value=lim)  # what ran

    def use_model(self, jid):
        try:
            job = self.finished_run(jid)
        except ValueError as e:
            return f"⚠️ {e}", gr.update()
        final = str(Path(job["out_dir"]) / "final")
        worse = G.is_worse(gain_of(self.studio, final))
        if worse is not None:
            return (f"the Ask tab now uses `{final}` (this browser tab only). ⚠️ Its gain view shows it worse "
                    f"than its start model ({100 * worse:+.1f} points): compare its answers before relying on it"), final
        return (f"the Ask tab now uses `{final}` (this browser tab only; for the whole app: "
                f"`python app.py --model {final}`)"), final

    # ---- one job: progress, curves, log; polled every POLL_SECONDS ---------------------------------------

    def job_view(self) -> None:
        self.progress = gr.HTML()
        with gr.Row():
            self.alpha = gr.Slider(0, 0.99, value=0.6, step=0.01, label="EMA smoothing")
        self.curves = gr.Plot(label="Metrics (metrics.jsonl)")
        self.rl_plot = gr.Plot(label="RL: rollout RaPR against H, eval accuracy", visible=False,
                               elem_id="train-rl-curves")
        self.log_box = gr.Code(label="Log (last 200 lines)", language="shell", lines=14, elem_id="job-log")
        self.seen = gr.State((None, -1, ""))  # (job id, metric rows, status) drawn last
        self.timer = gr.Timer(POLL_SECONDS)

    def wire_view(self) -> None:
        poll_outputs = [self.table, self.job_md, self.progress, self.curves, self.log_box, self.seen, self.gain_md,
                        self.rl_plot]
        self.job_id.change(self.poll, [self.job_id, self.alpha, self.seen], poll_outputs, **UI_ONLY)
        self.alpha.release(self.redraw, [self.job_id, self.alpha], self.curves, **UI_ONLY)
        self.timer.tick(self.poll, [self.job_id, self.alpha, self.seen], poll_outputs, api_name="train_poll",
                        show_progress="hidden")

    def poll(self, jid, a, last):
        table_rows = jobs_table(self.studio)
        jid = (jid or "").strip()
        if not jid:
            return table_rows, "", "", gr.skip(), "", last, "", gr.skip()
        try:
            v = self.runner.view(jid)
        except KeyError as e:
            return table_rows, f"⚠️ {e}", "", gr.skip(), "", last, "", gr.skip()
        job, rows = v["job"], v["metrics"]
        key = (jid, len(rows), job["status"])
        result = Path(job["out_dir"] or ".") / "gain.json"
        figures = json.loads(result.read_text()) if result.exists() else None
        gain = G.markdown(figures) if figures else ""
        warnings = AL.alarms_markdown(rl_alarms(job, rows))
        if tuple(last) == key:
            fig = rl_fig = gr.skip()
        else:
            fig = C.gain_bars(figures) if figures else job_figure(job, rows, a)
            rl = rl_curves(job, rows)
            rl_fig = gr.update(value=rl, visible=True) if rl is not None else gr.update(value=None, visible=False)
        header = job_markdown(job, len(rows)) + (f"\n\n{warnings}" if warnings else "")
        return (table_rows, header, progress_html(v["progress"], job["status"]), fig, v["log"], key, gain, rl_fig)

    def redraw(self, jid, a):
        try:
            v = self.runner.view((jid or "").strip())
        except KeyError:
            return gr.skip()
        return job_figure(v["job"], v["metrics"], a)


def job_figure(job: dict, rows: list[dict], a: float):
    """The job's curves; an RL job's also mark where its collapse alarms fired."""
    return C.job_curves(rows, alpha=a, title=f"{job['kind']} · {job['id']}",
                        marks=[(x.step, x.kind) for x in rl_alarms(job, rows)])


def pick(evt: gr.SelectData):
    return evt.row_value[0] if evt.row_value else gr.update()
