"""The Train tab (only with `python app.py --enable-training`): launch SFT, RL and evaluation jobs
as subprocesses of the real commands, watch them, cancel them.

Jobs live in SQLite (`jobs`) and on disk (`<data>/runs/<job id>/`: job.log, metrics.jsonl,
progress.json, exit_code), so a page reload, a second browser or a restarted app re-attaches to
them. A gr.Timer polls the selected job every 2 s; the curves are redrawn only when new metric
rows arrive.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path

import gradio as gr

from app import ROOT, UI_ONLY, Studio
from app import charts as C
from app import jobs as J

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


def build_command(studio: Studio, kind: str, config: str | None, dataset: str | None, bench: str | None,
                  model: str | None, limit, extra: str, custom: str, out: str) -> list[str]:
    """The argv for a job; ValueError says what is missing."""
    extra_args = shlex.split(extra or "")
    dataset = (dataset or "").strip() or None
    if kind == "sft":
        if not config:
            raise ValueError("choose an SFT config (configs/sft_*.json)")
        return J.sft_command(config, out, dataset, extra_args)
    if kind == "rl":
        if not config:
            raise ValueError("choose an RL config (configs/rl_*.json)")
        return J.rl_command(config, out, dataset, extra_args)
    if kind == "eval":
        if not bench:
            raise ValueError("choose a benchmark")
        return J.eval_command(bench, out, dataset, (model or "").strip() or None, int(limit) if limit else None,
                              extra_args)
    if kind == "custom":
        cmd = shlex.split(custom or "")
        if not cmd:
            raise ValueError("type the command to run")
        return [J.python() if c == "python" else c for c in cmd]
    raise ValueError(f"unknown job kind {kind!r}")


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


def build(studio: Studio, demo=None) -> None:
    runner = studio.jobs
    with gr.Column(elem_id="train-root"):
        with gr.Row():
            kind = gr.Radio(list(J.KINDS), value="sft", label="Job", scale=2)
            config = gr.Dropdown(configs("sft"), value=(configs("sft") or [None])[0], label="Config",
                                 allow_custom_value=True, scale=2)
            dataset = gr.Dropdown(datasets(studio), value=None, label="Dataset (data/… or an annotation export)",
                                  allow_custom_value=True, scale=3)
            refresh_ds = gr.Button("↻", scale=0, min_width=40)
        with gr.Row():
            bench = gr.Dropdown(BENCHES, value="tinyzoom", label="Benchmark (eval)", scale=1, visible=False)
            model = gr.Textbox(label="Model (eval; empty = embedded)", scale=2, visible=False)
            limit = gr.Number(None, label="Limit (eval)", precision=0, scale=1, visible=False)
            extra = gr.Textbox(label="Extra arguments (key=value … or --flags)", scale=3)
        custom = gr.Textbox(label="Custom command (kind 'custom'; argv, no shell)", visible=False)
        command = gr.Code(label="Command that will run", language="shell", lines=2, elem_id="train-command")
        with gr.Row():
            launch_btn = gr.Button("Launch", variant="primary", elem_id="train-launch")
            parallel = gr.Checkbox(False, label="Allow beside a running job")
            cancel_btn = gr.Button("Cancel job", variant="stop", elem_id="train-cancel")
        launch_md = gr.Markdown()
        table = gr.Dataframe(headers=JOB_COLUMNS, value=lambda: jobs_table(studio), interactive=False,
                             max_height=260, elem_id="jobs")
        job_id = gr.Textbox(label="Job (click a row)", elem_id="job-id")
        job_md = gr.Markdown()
        progress = gr.HTML()
        with gr.Row():
            alpha = gr.Slider(0, 0.99, value=0.6, step=0.01, label="EMA smoothing")
        curves = gr.Plot(label="Metrics (metrics.jsonl)")
        log_box = gr.Code(label="Log (last 200 lines)", language="shell", lines=14, elem_id="job-log")
        seen = gr.State((None, -1, ""))  # (job id, metric rows, status) drawn last
        timer = gr.Timer(POLL_SECONDS)

    inputs = [kind, config, dataset, bench, model, limit, extra, custom]

    def preview(k, cfg, ds, b, m, lim, ex, cu):
        try:
            _, out = runner.new_out_dir(k)
            return J.preview(build_command(studio, k, cfg, ds, b, m, lim, ex, cu, str(out)))
        except ValueError as e:
            return f"# {e}"

    def on_kind(k):
        cfgs = configs(k)
        return (gr.update(choices=cfgs, value=cfgs[0] if cfgs else None, visible=k in ("sft", "rl")),
                gr.update(visible=k == "eval"), gr.update(visible=k == "eval"), gr.update(visible=k == "eval"),
                gr.update(visible=k == "custom"))

    def launch(k, cfg, ds, b, m, lim, ex, cu, allow_parallel):
        running = studio.log.list_jobs(status="running")
        if running and not allow_parallel:
            return f"⚠️ job `{running[0]['id']}` is running; cancel it or tick 'Allow beside'", gr.update(), gr.update()
        job, out = runner.new_out_dir(k)
        try:
            cmd = build_command(studio, k, cfg, ds, b, m, lim, ex, cu, str(out))
        except ValueError as e:
            return f"⚠️ {e}", gr.update(), gr.update()
        runner.launch(k, cmd, out, dataset=(ds or "").strip() or None, job_id=job)
        return f"launched `{job}`", jobs_table(studio), job

    def poll(jid, a, last):
        table_rows = jobs_table(studio)
        jid = (jid or "").strip()
        if not jid:
            return table_rows, "", "", gr.skip(), "", last
        try:
            v = runner.view(jid)
        except KeyError as e:
            return table_rows, f"⚠️ {e}", "", gr.skip(), "", last
        job, rows = v["job"], v["metrics"]
        key = (jid, len(rows), job["status"])
        fig = gr.skip() if tuple(last) == key else C.job_curves(rows, alpha=a, title=f"{job['kind']} · {jid}")
        return (table_rows, job_markdown(job, len(rows)), progress_html(v["progress"], job["status"]), fig,
                v["log"], key)

    def redraw(jid, a):
        try:
            v = runner.view((jid or "").strip())
        except KeyError:
            return gr.skip()
        return C.job_curves(v["metrics"], alpha=a, title=f"{v['job']['kind']} · {jid}")

    def cancel(jid):
        jid = (jid or "").strip()
        if not jid:
            return "choose a job first", gr.update()
        ok = runner.cancel(jid)
        return (f"cancelled `{jid}`" if ok else f"`{jid}` is not running"), jobs_table(studio)

    def pick(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.update()

    for c in inputs:
        c.change(preview, inputs, command, **UI_ONLY)
    kind.change(on_kind, kind, [config, bench, model, limit, custom], **UI_ONLY)
    refresh_ds.click(lambda: gr.update(choices=datasets(studio)), None, dataset, **UI_ONLY)
    launch_btn.click(launch, inputs + [parallel], [launch_md, table, job_id], api_name="train_launch")
    cancel_btn.click(cancel, job_id, [launch_md, table], api_name="train_cancel")
    table.select(pick, None, job_id, **UI_ONLY)
    poll_outputs = [table, job_md, progress, curves, log_box, seen]
    job_id.change(poll, [job_id, alpha, seen], poll_outputs, **UI_ONLY)
    alpha.release(redraw, [job_id, alpha], curves, **UI_ONLY)
    timer.tick(poll, [job_id, alpha, seen], poll_outputs, api_name="train_poll", show_progress="hidden")
    if demo is not None:
        demo.load(preview, inputs, command, **UI_ONLY)
