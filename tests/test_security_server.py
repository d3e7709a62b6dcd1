"""Attacks on the real server (`python app.py` in its own process), over plain HTTP and gradio_client.

Each test is one attack from the public-hosting review and asserts the refusal: no file outside the
upload is read, nothing is written outside data/exports/, the DB/WAL/images are not downloadable, a
second visitor sees none of the first one's sessions in public mode, admin actions are absent without
a login, and --enable-training does not start exposed.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from core.media import image_sha, load_image
from core.paths import is_sha
from core.protocol import format_tool_call
from tests.conftest import photo_like
from tests.test_app_server import free_port, session_id_of

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TURNS = ["Zoom.\n\n" + format_tool_call("crop_image_normalized", {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1}),
         "It reads WOOLSHOPS. \\boxed{WOOLSHOPS}"]
ADMIN_ENDPOINTS = ("/import", "/export", "/export_preview", "/annotate_save", "/annotate_delete", "/annotate_queue",
                   "/fork_keep")


def start(tmp: Path, *flags: str, env: dict | None = None):
    """`python app.py` on a free port with the replay backend; returns (url, process, data dir)."""
    data = tmp / "data"
    turns = tmp / "turns.json"
    turns.write_text(json.dumps(TURNS))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "app.py", "--backend", "replay", "--replay", str(turns), "--db",
                             str(data / "studio.db"), "--port", str(port), *flags], cwd=ROOT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read()[-3000:])
        try:
            urllib.request.urlopen(url + "/gradio_api/info", timeout=2)
            return url, proc, data
        except urllib.error.HTTPError:  # up, but behind a login
            return url, proc, data
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not start")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def http_status(url: str, data: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers={
                "Content-Type": "application/json"} if data else {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def file_url(url: str, path: Path) -> str:
    return f"{url}/gradio_api/file={urllib.parse.quote(str(path))}"


def ask_args(photo, question="What does the sign say?", model=""):
    return (handle_file(str(photo)), question, "replay", model, True, 0.0, 4, 256, "vcot", False)


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("public")
    url, proc, data = start(tmp, "--public")
    yield url, data, tmp
    stop(proc)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    url, proc, data = start(tmp)
    yield url, data, tmp
    stop(proc)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("up") / "street.png"
    photo_like(400, 300).save(path)
    return path


def named_endpoints(client: Client) -> set[str]:
    return set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


# ---- public mode --------------------------------------------------------------------------------------

def test_a_second_visitor_sees_none_of_the_first_visitors_sessions(public, photo):
    url, data, _ = public
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    *_, status = alice.predict(*ask_args(photo), api_name="/ask")
    sid = session_id_of(status)
    filters = ("", "any", "any", 0, 99, "any", "any", "", "", 1)
    rows, info, _ = alice.predict(*filters, api_name="/sessions")
    assert [r[0] for r in rows["data"]] == [sid]
    rows, info, _ = bob.predict(*filters, api_name="/sessions")
    assert rows["data"] == [] or all(r[0] != sid for r in rows["data"]), "bob lists alice's session"
    assert info.startswith("0 sessions")
    header, *_ = bob.predict(sid, api_name="/open_session")
    assert header.startswith("⚠️") and "no session" in header
    assert "no session" in bob.predict(sid, sid, api_name="/compare")
    header, *_ = alice.predict(sid, api_name="/open_session")
    assert "What does the sign say?" in header
    fork_args = (sid, 1, "text", "", "It reads \\boxed{X}.")  # session, step, kind, frames, text
    assert "no session" in bob.predict(*fork_args, api_name="/fork")[0]  # nor can bob fork it
    stream, _, fork_id, _ = alice.predict(*fork_args, api_name="/fork")
    assert "Answer: X" in stream and fork_id
    rows = sqlite3.connect(data / "studio.db").execute("SELECT owner FROM sessions WHERE id = ?", [sid]).fetchall()
    assert rows[0][0]  # the visitor is recorded on the row
    fork_owner = sqlite3.connect(data / "studio.db").execute("SELECT owner FROM sessions WHERE id = ?", [fork_id])
    assert fork_owner.fetchall() == rows  # alice's fork is alice's


def test_admin_and_training_endpoints_do_not_exist_in_public_mode(public):
    url, _, _ = public
    names = named_endpoints(Client(url, verbose=False))
    assert "/ask" in names and "/sessions" in names
    assert not names & set(ADMIN_ENDPOINTS) and not any(n.startswith("/train") for n in names), names
    for name in ADMIN_ENDPOINTS + ("/train_launch",):  # called directly, past the page: no such route
        assert http_status(f"{url}/gradio_api/call{name}", json.dumps({"data": ["x"]}).encode()) >= 400


def test_visitors_cannot_choose_a_server_file_as_their_model(public, photo, tmp_path):
    """Public mode runs the operator's backend: a replay 'model' path from a visitor is ignored."""
    url, _, _ = public
    other = tmp_path / "other.json"
    other.write_text(json.dumps(["\\boxed{FROM-VISITOR-PATH}"]))
    chat, _, status = Client(url, verbose=False).predict(*ask_args(photo, model=str(other)), api_name="/ask")
    assert "WOOLSHOPS" in json.dumps(chat) and "FROM-VISITOR-PATH" not in json.dumps(chat)


def test_the_data_folder_is_not_served(public, photo):
    url, data, _ = public
    Client(url, verbose=False).predict(*ask_args(photo), api_name="/ask")
    views = list((data / "views").rglob("*.png"))  # the crop-beside-source pictures the chat shows
    assert views and http_status(file_url(url, views[0])) == 200  # what the page shows is served
    stored = next((data / "images").rglob("*.png"))
    for path in (data / "studio.db", data / "studio.db-wal", data / "studio.db-shm", stored, ROOT / "app.py"):
        if path.exists():
            assert http_status(file_url(url, path)) == 403, path
    assert http_status(file_url(url, data / "views" / ".." / "studio.db")) == 403


def test_a_file_payload_naming_a_server_path_is_refused(public):
    url, data, _ = public
    payload = {"data": [{"path": str(data / "studio.db"), "meta": {"_type": "gradio.FileData"}}, "q", "replay", "",
                        True, 0, 4, 256, "vcot", False]}
    req = urllib.request.Request(f"{url}/gradio_api/call/ask", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:  # refused when it joins the queue (the Ask validator preprocesses the inputs) ...
        event = json.loads(urllib.request.urlopen(req, timeout=10).read())["event_id"]
    except urllib.error.HTTPError as e:
        assert e.code == 400 and "SQLite" not in e.read().decode()
    else:  # ... or as the event runs
        body = urllib.request.urlopen(f"{url}/gradio_api/call/ask/{event}", timeout=60).read().decode()
        assert "event: error" in body and "SQLite" not in body
    n = sqlite3.connect(data / "studio.db").execute("SELECT count(*) FROM sessions WHERE media_path LIKE ?",
                                                    ["%studio.db%"]).fetchone()[0]
    assert n == 0


def test_search_input_is_data_not_sql(public):
    url, data, _ = public
    client = Client(url, verbose=False)
    for text in ("'; DROP TABLE sessions; --", '"', "a\x00b", "NEAR(", "*"):
        rows, info, _ = client.predict(text, "any", "any", 0, 99, "any", "any", "", "", 1, api_name="/sessions")
        assert "sessions" in info and not info.startswith("⚠️")
    rows, info, _ = client.predict("", "any", "any", 10 ** 30, 10 ** 30, "any", "any", "", "", 10 ** 30,
                                   api_name="/sessions")  # past SQLite's integers
    assert "sessions" in info
    assert sqlite3.connect(data / "studio.db").execute("SELECT count(*) FROM sessions").fetchone()[0] >= 0


# ---- a local (operator) server: imports and exports confined ----------------------------------------------

def test_imports_never_read_files_outside_the_upload(local, tmp_path):
    url, data, _ = local
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    secret = secret_dir / "secret.png"
    photo_like(300, 200, seed=9).save(secret)
    up = tmp_path / "upload"
    up.mkdir()
    rel = os.path.relpath(secret, data / "images")
    records = [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": str(secret)}, {"type": "text", "text": "abs?"}]},
                      {"role": "assistant", "content": "\\boxed{1}"}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "../" * 12 + str(secret)},
                                                   {"type": "text", "text": "dots?"}]},
                      {"role": "assistant", "content": "\\boxed{2}"}]},
    ]
    beside = up / "beside.png"  # uploaded with the records: the one picture an import may read
    photo_like(320, 240, seed=4).save(beside)
    records.append({"messages": [{"role": "user", "content": [{"type": "image", "image": "some/dir/beside.png"},
                                                              {"type": "text", "text": "uploaded?"}]},
                                 {"role": "assistant", "content": TURNS[0]}, {"role": "assistant", "content": TURNS[1]}]})
    (up / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    traj = {"question": "ours?", "media": {"kind": "image", "path": "../" * 10 + str(secret),
                                           "image": {"sha": rel[: -len(".png")], "width": 300, "height": 200}},
            "steps": [], "id": "../../../../escape"}
    (up / "traj.json").write_text(json.dumps(traj))
    client = Client(url, verbose=False)
    msg = client.predict([handle_file(str(up / "records.jsonl")), handle_file(str(up / "traj.json")),
                          handle_file(str(beside))], api_name="/import")
    assert msg.startswith("imported 4 trajectories"), msg
    db = sqlite3.connect(data / "studio.db")
    secret_sha = image_sha(load_image(secret))
    assert not db.execute("SELECT 1 FROM images WHERE sha = ?", [secret_sha]).fetchone()
    assert all(is_sha(s) for (s,) in db.execute("SELECT sha FROM images"))
    uploaded = db.execute("SELECT id, media_sha, n_ops FROM sessions WHERE question = 'uploaded?'").fetchone()
    assert uploaded[1] == image_sha(load_image(beside)) and uploaded[2] == 1  # re-executed on the upload
    sessions = db.execute("SELECT id, media_path, media_sha FROM sessions WHERE question != 'uploaded?'").fetchall()
    assert all("/" not in sid and mp is None and (ms is None or is_sha(ms)) for sid, mp, ms in sessions), sessions
    for sid, _, _ in sessions:
        header, replay, _, picture, *_ = client.predict(sid, api_name="/open_session")
        assert not header.startswith("⚠️") and picture is None
        assert "no source image" in json.dumps(replay)


def test_exports_are_written_only_under_data_exports(local, tmp_path):
    url, data, _ = local
    client = Client(url, verbose=False)
    for folder in (str(tmp_path / "evil"), str(data / "exports" / ".." / ".." / "evil2"), "../../evil3", "/tmp"):
        md, _, _ = client.predict(folder, api_name="/export")
        assert md.startswith("⚠️") and "data/exports/" in md, md
    assert not (tmp_path / "evil").exists() and not (data.parent / "evil2").exists()
    md, _, _ = client.predict("mine", api_name="/export")
    assert md.startswith("Exported") and (data / "exports" / "mine" / "export.json").exists()
    for name in ("export.json", "train.jsonl"):
        assert http_status(file_url(url, data / "exports" / "mine" / name)) == 403


# ---- logins and flags ----------------------------------------------------------------------------------------

def test_admin_features_in_public_mode_need_the_login(tmp_path):
    url, proc, _ = start(tmp_path, "--public", "--auth", "op:s3cret-pw")
    try:
        assert http_status(url + "/gradio_api/info") == 401
        with pytest.raises(Exception):
            Client(url, verbose=False).view_api(print_info=False)
        names = named_endpoints(Client(url, auth=("op", "s3cret-pw"), verbose=False))
        assert "/import" in names and "/export" in names
    finally:
        stop(proc)


@pytest.mark.parametrize("flags,env", [(["--public"], {}), (["--share"], {}), ([], {"SPACE_ID": "someone/studio"})])
def test_training_does_not_start_exposed_without_a_login(flags, env, tmp_path):
    out = subprocess.run([sys.executable, "app.py", "--enable-training", "--db", str(tmp_path / "s.db"), *flags],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **env})
    assert out.returncode != 0 and "needs a login" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "s.db").exists()
