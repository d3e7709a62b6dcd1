"""The Train tab (only with `python app.py --enable-training`): launch SFT, RL and evaluation jobs
as subprocesses of the real commands, watch them, cancel them.

Jobs live in SQLite (`jobs`) and on disk (`<data>/runs/<job id>/`: job.log, metrics.jsonl,
progress.json, exit_code), so a page reload, a second browser or a restarted app re-attaches to
them. A gr.Timer polls the selected job every 2 s; the curves are redrawn only when new metric
rows arrive.
"""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import gradio as gr

from app import ROOT, UI_ONLY, Studio
from app.training import alarms as AL
from app.shared import charts as C
from app.training import jobs as J

JOB_COLUMNS = ["id", "kind", "status", "exit", "dataset", "started", "duration", "note"]
BENCHES = ["tinyzoom", "vstar", "tallyqa", "mvbench", "infovqa"]
POLL_SECONDS = 2.0


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


def jobs_table(studio: Studio) -> list[list]:
    rows = []
    now = time.time()
    for j in studio.log.list_jobs()[:200]:
        start = j["started_at"] or j["created_at"]
        end = j["ended_at"] or (now if j["status"] == "running" else start)
        rows.append([j["id"], j["kind"], j["status"], "" if j["exit_code"] is None else j["exit_code"],
                     j["dataset"] or "", time.strftime("%m-%d %H:%M:%S", time.localtime(start)),
                     f"{end - start:.0f} s", (j["note"] or "")[:60]])
    return rows


def progress_html(progress: dict | None, status: str) -> str:
    if not progress or not progress.get("total"):
        return f"<div>status <b>{status}</b></div>"
    share = min(1.0, progress["done"] / progress["total"])
    return (f"<div>status <b>{status}</b> · {progress['done']} / {progress['total']} ({share:.0%})</div>"
            f"<div style='background:#e5e7eb;border-radius:4px;height:12px;margin-top:4px'>"
            f"<div style='background:#4f46e5;width:{share * 100:.1f}%;height:12px;border-radius:4px'></div></div>")


def job_markdown(job: dict, n_rows: int) -> str:
    note = f"\n\n⚠️ {job['note']}" if job.get("note") else ""
    code = "" if job["exit_code"] is None else f" (exit {job['exit_code']})"
    return (f"**{job['id']}** · {job['kind']} · **{job['status']}**{code} · pid {job['pid']} · "
            f"{n_rows} metric rows\n\n`{J.preview(job['cmd'])}`\n\nlog `{job['log_path']}` · metrics "
            f"`{job['metrics_path']}`{note}")


KIND_HELP = {
    "sft": "fine-tune on a dataset (an annotation export, with its trained-turn masks); the default config starts "
           "from the embedded model, or the checkpoint in Model",
    "rl": "curiosity GRPO from the checkpoint in Model (default: the config's)",
    "eval": "a benchmark on one model (Model: empty = embedded)",
    "data": "generate TinyZoom (train + held-out test split) into the Dataset folder (default data/tinyzoom)",
    "gain": "a finished run (Model: `data/runs/<job>`) against its start model on the same held-out items",
    "custom": "any command (argv, no shell)",
}


def visibility(k: str) -> tuple:
    """(config, bench, model, limit, custom) updates for a job kind."""
    return (gr.update(choices=configs(k), value=default_config(k), visible=k in ("sft", "rl")),
            gr.update(visible=k == "eval"),
            gr.update(visible=k in ("sft", "rl", "eval", "gain"),
                      label={"gain": "Run to evaluate (data/runs/<job>)"}.get(k, "Model (empty = the config's; "
                                                                                 "eval: the embedded model)")),
            gr.update(visible=k in ("eval", "gain")), gr.update(visible=k == "custom"))


def rl_target(job: dict) -> float:
    """The RL run's curiosity target H (from `<out>/rl_config.json`; 0.3, the release's, when unreadable)."""
    config = Path(job.get("out_dir") or ".") / "rl_config.json"
    try:
        return float(json.loads(config.read_text()).get("H", 0.3)) if config.exists() else 0.3
    except (ValueError, TypeError, OSError):
        return 0.3


def rl_alarms(job: dict, rows: list[dict]) -> list[AL.Alarm]:
    """Collapse alarms of an RL job, with the run's own H."""
    if job.get("kind") != "rl":
        return []
    return AL.collapse_alarms(rows, AL.AlarmSettings(H=rl_target(job)))


def rl_curves(job: dict, rows: list[dict]):
    """An RL job's rollout RaPR per step against H and its eval accuracy per eval step (None for
    other jobs)."""
    if job.get("kind") != "rl":
        return None
    from app.training.rl_curves import rl_figure

    return rl_figure({job["id"]: rows}, rl_target(job), title=f"RaPR vs H · eval accuracy · {job['id']}")


def build(studio: Studio, demo=None, ask_model=None) -> None:
    from app.training import gain as G

    runner = studio.jobs
    with gr.Column(elem_id="train-root"):
        with gr.Row():
            kind = gr.Radio(list(J.KINDS), value="sft", label="Job", scale=3, elem_id="train-kind")
            config = gr.Dropdown(configs("sft"), value=default_config("sft"), label="Config",
                                 allow_custom_value=True, scale=2, elem_id="train-config")
            dataset = gr.Dropdown(datasets(studio), value=None, label="Dataset (data/… or an annotation export)",
                                  allow_custom_value=True, scale=3, elem_id="train-dataset")
            refresh_ds = gr.Button("↻", scale=0, min_width=40)
        kind_md = gr.Markdown(KIND_HELP["sft"])
        with gr.Row():
            bench = gr.Dropdown(BENCHES, value="tinyzoom", label="Benchmark (eval)", scale=1, visible=False)
            model = gr.Textbox(label="Model (empty = the config's; eval: the embedded model)", scale=2,
                               elem_id="train-model")
            limit = gr.Number(None, label="Limit (items per held-out set)", precision=0, scale=1, visible=False,
                              elem_id="train-limit")
            extra = gr.Textbox(label="Extra arguments (key=value … or --flags)", scale=3, elem_id="train-extra")
        custom = gr.Textbox(label="Custom command (kind 'custom'; argv, no shell)", visible=False)
        command = gr.Code(label="Command that will run (exactly)", language="shell", lines=2, elem_id="train-command")
        planned = gr.State(None)  # the job id (and out folder) the preview shows and Launch uses
        with gr.Row():
            launch_btn = gr.Button("Launch", variant="primary", elem_id="train-launch")
            parallel = gr.Checkbox(False, label="Allow beside a running job")
            cancel_btn = gr.Button("Cancel job", variant="stop", elem_id="train-cancel")
        launch_md = gr.Markdown(elem_id="train-launched")
        table = gr.Dataframe(headers=JOB_COLUMNS, value=lambda: jobs_table(studio), interactive=False,
                             max_height=260, elem_id="jobs")
        with gr.Row():
            job_id = gr.Textbox(label="Job (click a row)", elem_id="job-id", scale=3)
            gain_btn = gr.Button("Evaluate against its start model", elem_id="train-gain", scale=1)
            use_btn = gr.Button("Use this model in Ask", elem_id="train-use", scale=1)
        job_md = gr.Markdown()
        gain_md = gr.Markdown(elem_id="train-gain-result")
        progress = gr.HTML()
        with gr.Row():
            alpha = gr.Slider(0, 0.99, value=0.6, step=0.01, label="EMA smoothing")
        curves = gr.Plot(label="Metrics (metrics.jsonl)")
        rl_plot = gr.Plot(label="RL: rollout RaPR against H, eval accuracy", visible=False, elem_id="train-rl-curves")
        log_box = gr.Code(label="Log (last 200 lines)", language="shell", lines=14, elem_id="job-log")
        seen = gr.State((None, -1, ""))  # (job id, metric rows, status) drawn last
        timer = gr.Timer(POLL_SECONDS)

    inputs = [kind, config, dataset, bench, model, limit, extra, custom]

    def preview(k, cfg, ds, b, m, lim, ex, cu, plan):
        """The command Launch will run, with the out folder it will use (kept in `planned`)."""
        plan = plan if plan and plan.split("-")[2] == k else runner.new_out_dir(k)[0]
        try:
            return J.preview(build_command(studio, k, cfg, ds, b, m, lim, ex, cu, str(runner.runs_dir / plan))), plan
        except ValueError as e:
            return f"# {e}", plan

    def on_kind(k):
        return (*visibility(k), KIND_HELP.get(k, ""))

    def launch(k, cfg, ds, b, m, lim, ex, cu, plan, allow_parallel):
        running = studio.log.list_jobs(status="running")
        if running and not allow_parallel:
            return (f"⚠️ job `{running[0]['id']}` is running; cancel it or tick 'Allow beside'", gr.update(),
                    gr.update(), plan)
        fresh = plan and plan.split("-")[2] == k and studio.log.get_job(plan) is None
        job = plan if fresh else runner.new_out_dir(k)[0]
        out = runner.runs_dir / job
        try:
            cmd = build_command(studio, k, cfg, ds, b, m, lim, ex, cu, str(out))
        except ValueError as e:
            return f"⚠️ {e}", gr.update(), gr.update(), plan
        runner.launch(k, cmd, out, dataset=(ds or "").strip() or None, job_id=job)
        return f"launched `{job}`", jobs_table(studio), job, None

    def job_figure(job: dict, rows: list[dict], a: float):
        """The job's curves; an RL job's also mark where its collapse alarms fired."""
        return C.job_curves(rows, alpha=a, title=f"{job['kind']} · {job['id']}",
                            marks=[(x.step, x.kind) for x in rl_alarms(job, rows)])

    def poll(jid, a, last):
        table_rows = jobs_table(studio)
        jid = (jid or "").strip()
        if not jid:
            return table_rows, "", "", gr.skip(), "", last, "", gr.skip()
        try:
            v = runner.view(jid)
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

    def redraw(jid, a):
        try:
            v = runner.view((jid or "").strip())
        except KeyError:
            return gr.skip()
        return job_figure(v["job"], v["metrics"], a)

    def cancel(jid):
        jid = (jid or "").strip()
        if not jid:
            return "choose a job first", gr.update()
        ok = runner.cancel(jid)
        return (f"cancelled `{jid}`" if ok else f"`{jid}` is not running"), jobs_table(studio)

    def finished_run(jid) -> dict:
        job = studio.log.get_job((jid or "").strip())
        if job is None or job["kind"] not in ("sft", "rl") or job["status"] != "done":
            raise ValueError("select a finished sft or rl job first")
        return job

    def evaluate_run(jid, lim, allow_parallel):
        """One click: a 'gain' job for the selected run, with the same fields a typed one uses."""
        try:
            job = finished_run(jid)
        except ValueError as e:
            return (f"⚠️ {e}",) + (gr.update(),) * 5
        k, m, lim = "gain", job["out_dir"], int(lim or 16)
        plan = runner.new_out_dir(k)[0]
        msg, rows, new_id, _ = launch(k, None, None, None, m, lim, "", "", plan, allow_parallel)
        return msg, rows, new_id, gr.update(value=k), gr.update(value=m), gr.update(value=lim)  # what ran

    def use_model(jid):
        try:
            job = finished_run(jid)
        except ValueError as e:
            return f"⚠️ {e}", gr.update()
        final = str(Path(job["out_dir"]) / "final")
        return (f"the Ask tab now uses `{final}` (this browser tab only; for the whole app: "
                f"`python app.py --model {final}`)"), final

    def pick(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.update()

    for c in inputs:
        c.change(preview, inputs + [planned], [command, planned], **UI_ONLY)
    kind.change(on_kind, kind, [config, bench, model, limit, custom, kind_md], **UI_ONLY)
    refresh_ds.click(lambda: gr.update(choices=datasets(studio)), None, dataset, **UI_ONLY)
    launch_btn.click(launch, inputs + [planned, parallel], [launch_md, table, job_id, planned],
                     api_name="train_launch").then(preview, inputs + [planned], [command, planned], **UI_ONLY)
    cancel_btn.click(cancel, job_id, [launch_md, table], api_name="train_cancel")
    gain_btn.click(evaluate_run, [job_id, limit, parallel], [launch_md, table, job_id, kind, model, limit],
                   api_name="train_gain")
    if ask_model is not None:
        use_btn.click(use_model, job_id, [launch_md, ask_model], **UI_ONLY)
    else:
        use_btn.visible = False
    table.select(pick, None, job_id, **UI_ONLY)
    poll_outputs = [table, job_md, progress, curves, log_box, seen, gain_md, rl_plot]
    job_id.change(poll, [job_id, alpha, seen], poll_outputs, **UI_ONLY)
    alpha.release(redraw, [job_id, alpha], curves, **UI_ONLY)
    timer.tick(poll, [job_id, alpha, seen], poll_outputs, api_name="train_poll", show_progress="hidden")
    if demo is not None:
        demo.load(preview, inputs + [planned], [command, planned], **UI_ONLY)
