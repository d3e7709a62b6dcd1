"""Public hardening, round two: each finding of the review, tried again on the real server
(`python app.py` in its own process) with raw HTTP as an attacker sends it: foreign Origin headers
with a real host name and a valid login cookie, long questions, crafted videos, queue floods,
password guessing, removed and internal routes, NaN settings, and what /config tells a visitor."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import photo_like
from tests.hostile_media import growing_video
from tests.test_app_server import free_port
from tests.test_security_server import TURNS, photo, stop  # noqa: F401 - photo is a fixture

ROOT = Path(__file__).resolve().parents[1]
SPACE = "someone-studio.hf.space"
DOCUMENTED = {"/ask", "/stop", "/sessions", "/open_session", "/compare", "/charts", "/fork"}


def serve(tmp: Path, *flags: str):
    """`python app.py` with the replay backend; stderr goes to a file the tests read."""
    turns = tmp / "turns.json"
    turns.write_text(json.dumps(TURNS))
    port = free_port()
    log = tmp / "server.log"
    proc = subprocess.Popen([sys.executable, "app.py", "--backend", "replay", "--replay", str(turns), "--db",
                             str(tmp / "data" / "studio.db"), "--port", str(port), *flags], cwd=ROOT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False",
                                 "GRADIO_TEMP_DIR": str(tmp / "uploads")},
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            urllib.request.urlopen(url + "/config", timeout=2)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.3)
    return url, proc, log


def http(url: str, body=None, headers: dict | None = None, form: bool = False, timeout: float = 30):
    """(status, headers, text) of one request; body: dict (JSON or form) or bytes."""
    data = body
    kind = "application/x-www-form-urlencoded" if form else "application/json"
    if isinstance(body, dict):
        data = (urllib.parse.urlencode(body) if form else json.dumps(body)).encode()
    req = urllib.request.Request(url, data=data, headers={**({"Content-Type": kind} if data else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


def upload(url: str, path: Path) -> str:
    """Upload one file the way the page does; returns its server path."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    code, _, text = http(url + "/gradio_api/upload", body,
                         {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert code == 200, text
    return json.loads(text)[0]


def ask_body(media: str | None, question: str, temperature=0.0) -> bytes:
    file = {"path": media, "meta": {"_type": "gradio.FileData"}} if media else None
    return json.dumps({"data": [file, question, "replay", "", True, temperature, 4, 256, "vcot", False]}).encode()


def call_ask(url: str, body: bytes) -> tuple[int, str]:
    """POST /gradio_api/call/ask: (status, event id or error text)."""
    code, _, text = http(url + "/gradio_api/call/ask", body)
    return code, json.loads(text)["event_id"] if code == 200 else text


def stream(url: str, event: str) -> str:
    return http(url + f"/gradio_api/call/ask/{event}", timeout=120)[2]


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("public")
    url, proc, log = serve(tmp, "--public", "--max-question-chars", "500", "--max-video-megapixels", "0.5",
                           "--max-asks-per-visitor", "2", "--step-delay", "1.5", "--max-pages", "20")
    yield url, tmp, log
    stop(proc)


@pytest.fixture(scope="module")
def operator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("operator")
    url, proc, log = serve(tmp, "--public", "--auth", "op:s3cret-pw", "--enable-training", "--login-attempts", "5")
    yield url, tmp, log
    stop(proc)


# ---- HIGH: cross-site requests -------------------------------------------------------------------------

def login_cookie(url: str) -> tuple[str, list[str]]:
    code, headers, text = http(url + "/login", {"username": "op", "password": "s3cret-pw"}, form=True)
    assert code == 200, text
    cookies = headers.get_all("set-cookie")
    return "; ".join(c.split(";")[0] for c in cookies), cookies


def test_a_cross_origin_request_with_a_valid_cookie_is_refused(operator, tmp_path):
    url, _, _ = operator
    cookie, _ = login_cookie(url)
    marker = tmp_path / "pwned"
    launch = {"data": ["custom", f"touch {marker}"]}
    foreign = {"Host": SPACE, "Origin": "https://evil.example", "Cookie": cookie}
    for method_path, body in (("/gradio_api/call/train_launch", launch), ("/gradio_api/call/sessions", {"data": []}),
                              ("/gradio_api/info", None), ("/config", None)):
        code, headers, _ = http(url + method_path, body, foreign)
        assert code == 403, method_path
    code, _, _ = http(url + "/gradio_api/info", None, {"Host": SPACE, "Origin": f"https://{SPACE}", "Cookie": cookie})
    assert code == 200  # the page's own requests still work
    time.sleep(1)
    assert not marker.exists()


def test_the_login_cookie_does_not_travel_cross_site(operator):
    _, cookies = login_cookie(operator[0])
    assert cookies and all("samesite=lax" in c.lower() and "samesite=none" not in c.lower() for c in cookies)


def test_the_api_page_shows_operators_no_server_path(operator):
    url, tmp, _ = operator
    cookie, _ = login_cookie(url)
    code, _, info = http(url + "/gradio_api/info", None, {"Cookie": cookie})
    assert code == 200 and "/export" in info and str(tmp / "data") not in info  # the export default is a name
    assert not [name for name in json.loads(info)["named_endpoints"] if name.startswith("/lambda")]


def test_login_attempts_are_throttled_and_logged(operator):
    url, _, log = operator
    codes = [http(url + "/login", {"username": "op", "password": f"guess{i}"}, form=True)[0] for i in range(8)]
    assert codes[:5] == [400] * 5 and set(codes[5:]) == {429}
    code, _, text = http(url + "/login", {"username": "op", "password": "s3cret-pw"}, form=True)
    assert code == 429 and "try again in" in text  # right password, but still within the window
    text = log.read_text()
    assert text.count("failed login: user 'op'") == 5 and "login refused (throttled" in text


# ---- HIGH: long questions, hostile videos ---------------------------------------------------------------

def test_a_question_over_the_cap_is_refused_at_once(public):
    url, _, _ = public
    t0 = time.perf_counter()
    code, text = call_ask(url, ask_body(None, "why? " * 20_000))
    assert time.perf_counter() - t0 < 1.0
    assert code == 422 and "the limit is 500" in text


def test_the_stream_does_not_resend_the_question(public, photo):
    url, _, _ = public
    question = "What does the sign say? " + "x" * 400 + " END-OF-QUESTION"
    code, event = call_ask(url, ask_body(upload(url, photo), question))
    assert code == 200, event
    body = stream(url, event)
    assert "WOOLSHOPS" in body and "END-OF-QUESTION" not in body


def test_a_video_with_frames_larger_than_its_header_is_refused(public, tmp_path):
    url, _, _ = public
    video = growing_video(tmp_path / "grows.mp4", small=(320, 240), big=(1280, 720))  # MPEG-TS inside
    code, event = call_ask(url, ask_body(upload(url, video), "What happens?"))
    assert code == 200, event
    body = stream(url, event)
    assert "0.5 megapixels" in body and "WOOLSHOPS" not in body


def test_a_nan_temperature_is_refused(public, photo):
    url, _, _ = public
    body = ask_body(upload(url, photo), "What does the sign say?").replace(b'"vcot"', b'"vcot"')
    body = body.replace(b", 0.0, 4,", b", NaN, 4,")
    code, event = call_ask(url, body)
    assert code == 200, event
    assert "settings must be numbers" in stream(url, event)


# ---- MEDIUM: queue flood, routes, API names, page sessions, /config -------------------------------------

def test_one_visitors_queued_asks_are_capped(public, photo):
    url, _, _ = public
    media = upload(url, photo)
    results = [call_ask(url, ask_body(media, f"What does the sign say? ({i})")) for i in range(4)]
    assert [code for code, _ in results] == [200, 200, 422, 422]
    assert "already have 2 questions or forks waiting or running" in results[2][1]
    for _, event in results[:2]:
        stream(url, event)
    assert call_ask(url, ask_body(media, "And now?"))[0] == 200  # capped, not banned


def test_removed_and_internal_routes_fail_like_unknown_ones(public):
    url, _, log = public
    before = log.read_text().count("Traceback")
    for name in ("import", "export", "annotate_save", "train_launch", "no_such_thing", "false_1", "on_load"):
        code, _, text = http(url + f"/gradio_api/call/{name}", {"data": []})
        assert code == 404 and json.loads(text) == {"detail": "Not Found"}, name
        assert http(url + f"/gradio_api/run/{name}", {"data": []})[0] == 404
    time.sleep(0.5)
    assert log.read_text().count("Traceback") == before


def test_the_api_lists_exactly_the_documented_names(public):
    info = json.loads(http(public[0] + "/gradio_api/info")[2])
    assert set(info["named_endpoints"]) == DOCUMENTED and not info["unnamed_endpoints"]


def load_page(url: str, fn_index: int) -> None:
    """What a page's load event does, by an API client with a fresh session and no cookie."""
    session = uuid.uuid4().hex
    code, _, text = http(url + "/gradio_api/queue/join",
                         {"data": [""], "fn_index": fn_index, "session_hash": session, "event_data": None,
                          "trigger_id": None})
    assert code == 200, text
    http(url + f"/gradio_api/queue/data?session_hash={session}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_page_loads_without_unload_do_not_grow_memory(tmp_path):
    url, proc, _ = serve(tmp_path, "--public", "--max-pages", "20")
    try:
        config = json.loads(http(url + "/config")[2])
        index = next(i for i, d in enumerate(config["dependencies"])
                     if any(t[1] == "load" for t in d["targets"]))
        for _ in range(50):  # warm up: allocator pools, first-call caches
            load_page(url, index)
        before = rss_mb(proc.pid)
        for _ in range(400):
            load_page(url, index)
        assert rss_mb(proc.pid) - before < 30  # ~80 MB before the cap (0.2 MB per page)
    finally:
        stop(proc)


def test_config_does_not_carry_the_operators_model(public):
    url, tmp, _ = public
    config = http(url + "/config")[2]
    assert str(tmp / "turns.json") not in config
    assert '"value":"turns.json"' in config  # the Model field shows the file's name only


def test_session_rows_carry_no_server_path(public, photo):
    url, tmp, _ = public
    code, event = call_ask(url, ask_body(upload(url, photo), "Which model?"))
    stream(url, event)
    import sqlite3

    models = {m for (m,) in sqlite3.connect(tmp / "data" / "studio.db").execute("SELECT model FROM sessions")}
    assert models == {"replay:turns.json"}


# ---- MEDIUM: flags ------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_training_on_a_network_host_needs_a_login(host, tmp_path):
    out = subprocess.run([sys.executable, "app.py", "--enable-training", "--host", host, "--db", str(tmp_path / "s.db")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert out.returncode != 0 and "needs a login" in out.stderr and "Traceback" not in out.stderr


def test_share_is_public_mode_unless_a_login_is_required():
    import importlib.util

    spec = importlib.util.spec_from_file_location("studio_entry", ROOT / "app.py")  # app.py, not app/
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    assert entry.is_public(entry.build_parser().parse_args(["--share"]))
    assert not entry.is_public(entry.build_parser().parse_args([]))


# ---- MEDIUM: disk -------------------------------------------------------------------------------------

def test_the_image_store_quota_evicts_old_sessions_but_never_a_running_one(tmp_path):
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    url, proc, _ = serve(tmp_path, "--public", "--max-store-gb", str(1.0e6 / 1024 ** 3), "--store-keep-min", "0",
                         "--step-delay", "1", "--max-asks-per-visitor", "4")
    db = tmp_path / "data" / "studio.db"
    pictures = []
    for seed in range(5):
        pictures.append(tmp_path / f"p{seed}.png")
        photo_like(400, 300, seed=seed).save(pictures[-1])
    media = [upload(url, p) for p in pictures]

    def ask(path: str) -> str:
        code, event = call_ask(url, ask_body(path, "What does the sign say?"))
        assert code == 200, event
        return event

    def ids() -> list[str]:
        return [r[0] for r in sqlite3.connect(db).execute("SELECT id FROM sessions ORDER BY created_at")]
    try:
        for path in media[:2]:  # A and B finish
            stream(url, ask(path))
        a = ids()[0]
        running = ask(media[2])  # R runs for two paced turns ...
        time.sleep(0.5)
        r = ids()[-1]
        with ThreadPoolExecutor(2) as pool:  # ... while C and D make room
            list(pool.map(lambda p: stream(url, ask(p)), media[3:]))
        stream(url, running)
        left = ids()
        assert r in left and a not in left
        total = sqlite3.connect(db).execute("SELECT sum(bytes) FROM images").fetchone()[0]
        files = sum(p.stat().st_size for p in (tmp_path / "data" / "images").rglob("*.png"))
        assert files <= total * 1.01  # evicted sessions' pictures left the disk too
    finally:
        stop(proc)


def test_uploads_are_cleaned_and_capped(tmp_path, photo):
    url, proc, _ = serve(tmp_path, "--public", "--upload-ttl-min", str(4 / 60),
                         "--max-upload-cache-gb", str(0.6e6 / 1024 ** 3))
    try:
        first = Path(upload(url, photo))
        assert first.exists()
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(700_000))
        upload(url, big)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.png\"\r\n\r\n"
                ).encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        code, _, text = http(url + "/gradio_api/upload", body,
                             {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert code == 507 and "upload space is full" in text
        deadline = time.time() + 20
        while first.exists() and time.time() < deadline:
            time.sleep(0.5)
        assert not first.exists()  # Gradio's delete_cache removed it after the ttl
        assert upload(url, photo)  # room again
    finally:
        stop(proc)


# ---- LOW: export ---------------------------------------------------------------------------------------

def test_an_export_killed_midway_leaves_no_half_folder(tmp_path):
    import signal

    from app.annotate import export as E
    from app.shared.studio_log import StudioLog
    from tests.test_export import ANSWER_7, GOOD_BOX, WRONG, logged

    log = StudioLog(tmp_path / "studio.db")
    for _ in range(30):
        sid = logged(log, [WRONG, ANSWER_7])
        log.add_annotation(sid, 0, "wrong box", corrected_box=GOOD_BOX)
        log.add_annotation(sid, None, "wrong answer", corrected_answer="3")
    out = tmp_path / "exports" / "mine"
    code = (f"from app.shared.studio_log import StudioLog; from app.annotate import export as E; "
            f"E.export_annotated(StudioLog({str(tmp_path / 'studio.db')!r}), {str(out)!r}, progress=False)")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not any((p / "images").exists() for p in out.parent.glob(".mine.partial-*")):
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not out.exists()  # the name is free: nothing half-written under it
    assert E.export_annotated(log, out, progress=False).records == 30
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine"]  # the dead export's partial folder is gone
