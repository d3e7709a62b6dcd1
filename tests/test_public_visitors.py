"""Public mode, what a visitor's identity bounds, on the real server (`python app.py` in its own
process) with raw HTTP as an attacker sends it: handlers the page calls by index through the queue
(`/gradio_api/queue/join`), forks under the per-visitor cap, and the image-store quota of a client
that picks a new session hash for every call."""
from __future__ import annotations

import json
import sqlite3
import time
import uuid

import pytest

from tests.conftest import photo_like
from tests.test_public_limits import ask_body, call_ask, http, serve, stream, upload
from tests.test_security_server import photo, stop  # noqa: F401 - photo is a fixture


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("visitors")
    url, proc, log = serve(tmp, "--public", "--max-asks-per-visitor", "2", "--step-delay", "1.5")
    yield url, tmp, log
    stop(proc)


def config(url: str) -> dict:
    return json.loads(http(url + "/config")[2])


def handler(cfg: dict, event: str, target: str | None = None, output: str | None = None,
            api_name: str | None = None) -> int:
    """The index of the handler bound to `event` (of the component `target`, writing `output`, both
    elem_ids; or named `api_name`), as the page knows it."""
    def ids(elem_id: str) -> set[int]:
        return {c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == elem_id}
    for dep in cfg["dependencies"]:
        if api_name is not None and dep.get("api_name") != api_name:
            continue
        if output is not None and not ids(output) & set(dep["outputs"]):
            continue
        if any(e == event and (target is None or t in ids(target)) for t, e in dep["targets"]):
            return dep["id"]
    raise AssertionError(f"no handler for {event} of {target or output or api_name}")


def picture(value) -> bool:
    """True when an output value is a picture (a file Gradio serves), not None or an empty update."""
    return isinstance(value, dict) and bool(value.get("url") or value.get("path"))


def join(url: str, index: int, data: list, session: str, event_data=None) -> tuple[int, str]:
    """POST /gradio_api/queue/join as the page does: (status, event id or error text)."""
    code, _, text = http(url + "/gradio_api/queue/join", {"data": data, "fn_index": index, "session_hash": session,
                                                           "event_data": event_data, "trigger_id": None})
    return code, json.loads(text).get("event_id") if code == 200 else text


def result(url: str, session: str, event: str) -> dict:
    """The completed message of one queued event, read from the session's event stream."""
    import urllib.request

    with urllib.request.urlopen(url + f"/gradio_api/queue/data?session_hash={session}", timeout=120) as r:
        for line in r:
            if not line.startswith(b"data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed" and msg.get("event_id") == event:
                return msg
    raise AssertionError("the event did not complete")


def call(url: str, index: int, data: list, session: str, event_data=None) -> dict:
    code, event = join(url, index, data, session, event_data)
    assert code == 200, event
    return result(url, session, event)


def ask_as(url: str, session: str, media: str, question: str) -> str:
    """One Ask through the queue under a chosen session hash; returns the session id."""
    cfg = config(url)
    msg = call(url, handler(cfg, "click", api_name="ask"), json.loads(ask_body(media, question))["data"], session)
    status = msg["output"]["data"][2]
    return status.split("session `")[1].split("`")[0]


def test_fork_panel_handlers_show_a_visitor_only_their_own_sessions(public, photo):
    url, _, _ = public
    cfg = config(url)
    alice = uuid.uuid4().hex
    sid = ask_as(url, alice, upload(url, photo), "What does the sign say?")
    show = handler(cfg, "change", output="fork-image")  # the fork panel redraws the open session's picture
    assert picture(call(url, show, [sid, 1], alice)["output"]["data"][0])  # the owner sees it
    assert not picture(call(url, show, [sid, 1], uuid.uuid4().hex)["output"]["data"][0])  # nobody else
    click = handler(cfg, "select", target="fork-image")
    clicked = call(url, click, [sid, 1, None], uuid.uuid4().hex, event_data={"index": [10, 10], "value": None})
    assert not picture(clicked["output"]["data"][0])


def test_the_queue_runs_only_handlers_the_page_triggers(public):
    url, _, log = public
    cfg = config(url)
    unload = next(d["id"] for d in cfg["dependencies"] if any(e == "unload" for _, e in d["targets"]))
    before = log.read_text().count("Traceback")
    for index in (unload, 10_000, -1, "1", None):
        code, text = join(url, index, [], uuid.uuid4().hex)
        assert code == 404 and json.loads(text) == {"detail": "Not Found"}, index
    big = json.dumps({"data": ["x" * (2 ** 21)], "fn_index": 0, "session_hash": "s"}).encode()
    assert http(url + "/gradio_api/queue/join", big)[0] == 413
    time.sleep(0.5)
    assert log.read_text().count("Traceback") == before


def test_a_fork_counts_against_the_per_visitor_cap(public, photo):
    url, _, _ = public
    media = upload(url, photo)
    running = [call_ask(url, ask_body(media, f"What does the sign say? ({i})")) for i in range(2)]
    assert [code for code, _ in running] == [200, 200]
    code, _, text = http(url + "/gradio_api/call/fork", {"data": ["nosuch", 1, "text", None, "", "x"]})
    assert code == 422 and "already have 2 questions or forks" in text
    for _, event in running:
        stream(url, event)


def test_rotating_session_hashes_does_not_escape_the_store_quota(tmp_path):
    """/gradio_api/call/ask gives every call a fresh session hash (so a fresh `tab:` owner); the quota
    counts the client, not the hash."""
    url, proc, _ = serve(tmp_path, "--public", "--store-mb-per-visitor", str(1.0e6 / 1024 ** 2),
                         "--store-keep-min", "0", "--max-asks-per-visitor", "4")
    db = tmp_path / "data" / "studio.db"
    try:
        media = []
        for seed in range(4):
            photo_like(400, 300, seed=seed).save(tmp_path / f"p{seed}.png")
            media.append(upload(url, tmp_path / f"p{seed}.png"))
        first = None
        for path in media:
            code, event = call_ask(url, ask_body(path, "What does the sign say?"))
            assert code == 200, event
            stream(url, event)
            first = first or sqlite3.connect(db).execute("SELECT id FROM sessions").fetchone()[0]
        rows = sqlite3.connect(db).execute("SELECT id, owner FROM sessions").fetchall()
        assert len({owner for _, owner in rows}) == len(rows)  # a new owner each call ...
        assert first not in {sid for sid, _ in rows}  # ... yet the oldest went to make room
        keys = sqlite3.connect(db).execute("SELECT DISTINCT quota_key FROM sessions").fetchall()
        assert len(keys) == 1 and keys[0][0].startswith("addr:")  # one visitor, by address
    finally:
        stop(proc)


def test_an_internal_endpoint_never_reaches_a_visitor(tmp_path, photo):
    """The operator's model is an OpenAI-compatible server at an internal address that is down: the
    chat says it failed, without the address (nor does /config, nor the session row)."""
    from tests.test_app_server import free_port

    internal = f"127.0.0.1:{free_port()}"
    url, proc, _ = serve(tmp_path, "--public", "--backend", "openai", "--model", f"http://{internal}/v1")
    try:
        assert internal not in http(url + "/config")[2]
        code, event = call_ask(url, ask_body(upload(url, photo), "What does the sign say?"))
        assert code == 200, event
        text = stream(url, event)
        assert "cannot reach" in text and internal not in text and "<endpoint>" in text
        model = sqlite3.connect(tmp_path / "data" / "studio.db").execute("SELECT model FROM sessions").fetchone()
        assert model == ("openai endpoint",)
    finally:
        stop(proc)


def test_a_hugging_face_sign_in_is_the_visitor_key():
    """With a Space's OAuth (gr.LoginButton, `hf_oauth: true`) the signed-in account is the visitor,
    until its sign-in expires; without one, the hashed address."""
    from starlette.requests import Request

    from app.public.limits import visitor_key

    def request(session: dict | None) -> Request:
        scope = {"type": "http", "headers": [], "client": ("203.0.113.9", 5000)}
        return Request({**scope, "session": session} if session is not None else scope)
    signed = {"oauth_info": {"userinfo": {"preferred_username": "alice"}, "expires_at": time.time() + 60}}
    expired = {"oauth_info": {"userinfo": {"preferred_username": "alice"}, "expires_at": time.time() - 1}}
    assert visitor_key(request(signed)) == "hf:alice"
    assert visitor_key(request(expired)) == visitor_key(request(None)) == visitor_key(request({}))
    assert visitor_key(request(None)).startswith("addr:") and "203.0.113.9" not in visitor_key(request(None))


def test_direct_routes_run_no_queued_handler(public, photo):
    """/gradio_api/run/<name> and /api/<name> would run a handler outside the queue: no per-visitor
    cap, no concurrency limit, no validator. They answer 404; /call (v1 and v2) queues as before."""
    url, tmp, log = public
    media = upload(url, photo)
    db = tmp / "data" / "studio.db"
    sessions = sqlite3.connect(db).execute("SELECT count(*) FROM sessions").fetchone()[0]
    before = log.read_text().count("Traceback")
    for route in ("run/ask", "api/ask", "api/on_unload", "api/false_3", "run/false_3"):
        code, _, text = http(url + f"/gradio_api/{route}", ask_body(media, "What does the sign say?"))
        assert code == 404, (route, text)
    time.sleep(0.5)
    assert sqlite3.connect(db).execute("SELECT count(*) FROM sessions").fetchone()[0] == sessions
    assert log.read_text().count("Traceback") == before
    code, _, text = http(url + "/gradio_api/call/v2/ask", {"media_path": {"path": media, "meta": {"_type": "gradio.FileData"}},
                                                           "q": "What does the sign say?"})
    assert code == 200, text
    stream(url, json.loads(text)["event_id"])
