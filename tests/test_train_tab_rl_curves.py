"""The Train tab's RL curves: rollout RaPR per step against the run's H and eval accuracy per eval
step, drawn for any RL job (and only for RL jobs), through the real Gradio server."""
from __future__ import annotations

import json
import socket

from app.shared.studio_log import StudioLog
from app.training.watch import rl_curves


def stream(raprs, evals):
    """A metrics.jsonl as `train rl` writes it: a row per step, eval_* rows at the eval steps."""
    rows = [{"step": s, "rapr": r, "reward": 0.5, "accuracy": 0.5} for s, r in enumerate(raprs, 1)]
    rows += [{"step": s, "eval_rapr": 0.2, "eval_zoom_needed_acc": a, "eval_zoom_optional_acc": 1 - a}
             for s, a in evals]
    return sorted(rows, key=lambda r: r["step"])


def traces(fig, name_part):
    return [t for t in fig.data if name_part in (t.name or "")]


def test_an_rl_job_draws_rapr_against_its_h_and_accuracy_per_eval(tmp_path):
    (tmp_path / "rl_config.json").write_text(json.dumps({"H": 0.45}))
    rows = stream([0.1, 0.2, 0.4, 0.5], [(0, 0.25), (2, 0.5), (4, 0.75)])
    job = {"id": "rl-7", "kind": "rl", "out_dir": str(tmp_path)}
    fig = rl_curves(job, rows)
    rapr = [t for t in fig.data if t.name == "rl-7"]
    assert len(rapr) == 1 and list(rapr[0].x) == [1, 2, 3, 4] and list(rapr[0].y) == [0.1, 0.2, 0.4, 0.5]
    needed = traces(fig, "zoom-needed")
    assert list(needed[0].x) == [0, 2, 4] and list(needed[0].y) == [0.25, 0.5, 0.75]
    assert [s.y0 for s in fig.layout.shapes] == [0.45]  # the run's own H, not the default 0.3
    assert rl_curves({**job, "kind": "sft"}, rows) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_train_tab_shows_the_rl_curves_for_an_rl_job_only(tmp_path):
    from gradio_client import Client

    from app import Studio
    from app.ui import build_app, launch_kwargs

    log = StudioLog(tmp_path / "studio.db")
    studio = Studio(log=log, data_dir=tmp_path, backend="replay", enable_training=True)
    for jid, kind in (("rl-run", "rl"), ("sft-run", "sft")):
        out = tmp_path / "runs" / jid
        out.mkdir(parents=True)
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stream([0.3, 0.1], [(0, 0.4), (2, 0.6)])))
        (out / "job.log").write_text("done\n")
        log.create_job(jid, kind, ["python", "-m", "train", kind], out_dir=str(out),
                       metrics_path=str(out / "metrics.jsonl"), log_path=str(out / "job.log"))
        log.update_job(jid, status="done", exit_code=0)
    demo = build_app(studio)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=_free_port(), **launch_kwargs())
    try:
        client = Client(demo.local_url, verbose=False)
        *_, rl_plot = client.predict("rl-run", 0.6, api_name="/train_poll")
        text = json.dumps(rl_plot)
        assert "rollout RaPR per step" in text and "zoom-needed" in text and "RaPR vs H" in text
        *_, sft_plot = client.predict("sft-run", 0.6, api_name="/train_poll")
        assert "rollout RaPR per step" not in json.dumps(sft_plot)
    finally:
        demo.close()
