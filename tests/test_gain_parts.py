"""The Train tab's gain view in three parts (trained on, held out, own split), and a fresh Studio's
corrections fine-tune and gain view working without a separate data job: real evaluation sessions in
a real SQLite log, the Annotate tab's records, the Studio's export, the Train tab's own handlers and
jobs, the embedded model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.training import gain_sets as S
from train.synth.build import BuildConfig, build, build_suite

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = "assets/pixel-reasoner-tiny"


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Path:
    """Six zoom-needed items of one failure family (tags in a corner)."""
    root = tmp_path_factory.mktemp("family")
    build_suite(root, per_shift=6, names=["tag_corner"], categories=["zoom_needed"])
    return root / "tag_corner"


def exported(rec: dict, family: Path) -> dict:
    """An export's record of an evaluation session on `rec` (the fields the gain view reads)."""
    task = {**rec["meta"]["task"], "media": str(family / rec["meta"]["task"]["media"])}
    return {"id": f"{rec['id']}-sft", "messages": [], "meta": {
        "task": task, "source_item": {"id": rec["id"], "media": task["media"]}}}


def test_the_parts_hold_what_was_trained_on_items_like_it_and_the_own_split(family, tmp_path):
    items = S.read_records(family / "test.jsonl")
    export = tmp_path / "export"
    export.mkdir()
    (export / "train.jsonl").write_text("".join(json.dumps(exported(r, family)) + "\n" for r in items[:2]))
    (export / "test.jsonl").write_text(json.dumps(exported(items[2], family)) + "\n")
    own = tmp_path / "own"
    build(BuildConfig(out=str(own), train=0, validation=0, test=4, seed=0, progress=False))
    parts = {p.label: p for p in S.export_parts(export, own, tmp_path / "items")}
    assert list(parts) == [S.TRAINED, S.HELD_OUT, S.OWN]
    ids = {label: [r["id"] for r in S.read_records(Path(p.folder) / "test.jsonl")] for label, p in parts.items()}
    assert ids[S.TRAINED] == [f"{r['id']}-sft" for r in items[:2]]
    assert ids[S.HELD_OUT] == [f"{items[2]['id']}-sft"] + [f"tag_corner/{r['id']}" for r in items[3:]]
    assert len(ids[S.OWN]) == 4
    media = [r["meta"]["task"]["media"] for r in S.read_records(Path(parts[S.HELD_OUT].folder) / "test.jsonl")]
    assert all(Path(m).is_absolute() and Path(m).is_file() for m in media)
    # corrections made on the own split's items: those are not scored as the own split
    own_items = S.read_records(own / "test.jsonl")
    (export / "train.jsonl").write_text(json.dumps(exported(own_items[0], own)) + "\n")
    (export / "test.jsonl").unlink()
    parts = {p.label: p for p in S.export_parts(export, own, tmp_path / "items2")}
    assert S.HELD_OUT not in parts and parts[S.OWN].n == 3


def evaluation_sessions(family: Path, db: Path, out: Path) -> dict[str, str]:
    """item id -> session id: the embedded model on the family's items, logged as `core eval --db` logs."""
    from app.shared.studio_log import StudioLog
    from core.cli import main as core_main

    code = core_main(["eval", "--bench", "tinyzoom", "--data", str(family), "--model", EMBEDDED, "--out", str(out),
                      "--db", str(db), "--quiet", "--temperature", "0", "--limit", "4"])
    assert code in (0, 1)
    rows = StudioLog(db).db.query("SELECT id, meta_json FROM sessions")
    return {json.loads(r["meta_json"])["item_id"]: r["id"] for r in rows}


def test_a_fresh_studio_fine_tunes_corrections_and_shows_the_three_parts(family, tmp_path):
    from app import Studio
    from app.annotate import export as E
    from app.annotate import labeling as L
    from app.shared.studio_log import StudioLog
    from app.training.tab import TrainTab

    data = tmp_path / "data"  # a fresh Studio: no data/tinyzoom, no data job run
    sessions = evaluation_sessions(family, data / "studio.db", tmp_path / "eval")
    studio = Studio(log=StudioLog(data / "studio.db"), data_dir=data, enable_training=True)
    truths = {r["id"]: r["meta"]["task"]["answer"] for r in S.read_records(family / "test.jsonl")}
    for item, sid in sessions.items():
        L.save(studio.log, sid, L.WHOLE, "wrong answer", "", str(truths[item]), None, None, "", "test")
    report = E.export_annotated(studio.log, data / "exports" / "fixes", hold_out_every=2, progress=False)
    assert (report.records, report.held_out) == (4, 2)
    tab = TrainTab(studio)
    config, export = "configs/sft_corrections.json", str(data / "exports" / "fixes")
    args = ("sft", config, export, None, "", None, "max_steps=1", "")
    command, notes, plan = tab.preview(*args, None)
    assert f"`{data / 'tinyzoom'}` is not built yet" in notes  # said before it starts
    said, _, job, _ = tab.launch(*args, plan, False)
    sft = studio.jobs.wait(job, 600)
    assert sft["status"] == "done", Path(sft["log_path"]).read_text()[-3000:]
    assert json.loads((Path(sft["out_dir"]) / "summary.json").read_text())["mixed_records"] == 400
    assert (data / "tinyzoom" / "test.jsonl").is_file()  # built by the fine-tune, the own split of the gain view
    said, _, gain_job, *_ = tab.evaluate_run(job, 4, False)
    gain = studio.jobs.wait(gain_job, 600)
    assert gain["status"] == "done", Path(gain["log_path"]).read_text()[-3000:]
    figures = json.loads((Path(gain["out_dir"]) / "gain.json").read_text())
    assert {k: v["n"] for k, v in figures["sets"].items()} == {S.TRAINED: 2, S.HELD_OUT: 4, S.OWN: 4}
    shown = tab.poll(gain_job, 0.6, (None, -1, ""))[6]  # the gain view's markdown
    for part in (S.TRAINED, S.HELD_OUT, S.OWN):
        assert f"**{part}**" in shown
    assert "(greedy, same items, 95% bootstrap intervals)" in shown and "pts [" in shown


def test_the_gain_job_builds_a_missing_own_split_and_never_writes_into_a_foreign_folder(tmp_path, monkeypatch):
    from app.training import gain as G
    from app.training import jobs as J

    monkeypatch.setattr(J, "FRESH_SYNTH", ["--train", "0", "--validation", "0", "--test", "3", "--seed", "0"])
    parts = G.plan(tmp_path / "gain", export=None, own=str(tmp_path / "tinyzoom"), data=[])  # python -m train synth
    assert [(p.label, p.n) for p in parts] == [(S.OWN, 3)]
    foreign = tmp_path / "family"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="^error: no items to compare on"):
        G.plan(tmp_path / "gain2", export=None, own=str(foreign), data=[])
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
