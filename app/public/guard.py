"""The server's own guards, one ASGI middleware in front of Gradio's routes (see docs/public.md).

- **Same origin only.** A request whose `Origin` is not this server's host (or that a browser marks
  `Sec-Fetch-Site: cross-site`, outside a page navigation) is refused with 403 before Gradio sees it,
  so a page elsewhere cannot ride a logged-in operator's cookie to launch jobs or read sessions.
  The login cookie is rewritten from `SameSite=None` to `SameSite=Lax`, so it does not travel
  cross-site at all. API clients (no `Origin`) are unaffected.
- **Logins are throttled and logged.** After `max_failures` wrong passwords within `window_s` from
  one address or for one user name, `/login` answers 429 without checking, until the window passes.
  Every failure, refusal and success is logged with the user name and address.
- **Only documented API names are routed.** `/gradio_api/call/<name>` (and `/call/v2/<name>`),
  `/gradio_api/run/<name>` and `/gradio_api/api/<name>` for a name that is not a public endpoint
  answer 404, as an unknown route does (Gradio answers 500 and logs a traceback for both). Queued
  handlers (all of the Studio's) are not run by the direct routes `/run` and `/api` at all
  (`api_open` off, as Gradio does on a Space): those would skip the queue, its concurrency limits
  and the validators that cap a visitor's Asks.
- **The queue runs only what the page triggers.** `/gradio_api/queue/join` names a handler by index,
  as the page does; an index that is no handler, or one the page never sends there (the unload
  handler, which Gradio runs itself when a tab closes), answers 404 without a traceback, and a join
  body over `join_bytes` answers 413 before Gradio parses it.
- **The upload folder has a size cap.** An upload arriving while Gradio's upload folder holds more
  than `upload_cap_bytes` is refused with 507; Gradio's `delete_cache` empties it over time.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

logger = logging.getLogger("studio.guard")

API_ROUTES = ("/gradio_api/call/", "/gradio_api/run/", "/gradio_api/api/")
JOIN_ROUTE = "/gradio_api/queue/join"


@dataclass
class GuardConfig:
    """What the middleware enforces; filled in by app.py after the page is built."""

    api_names: set[str] = field(default_factory=set, metadata={"help": "public endpoint names (no slash)"})
    origins: set[str] = field(default_factory=set, metadata={
        "help": "origins accepted besides the request's own host (a proxy that rewrites Host; a Space's address)"})
    max_failures: int = field(default=10, metadata={"help": "wrong passwords per address or user name per window"})
    window_s: float = field(default=60.0, metadata={"help": "seconds a failure counts against the login"})
    page_fns: set[int] | None = field(default=None, metadata={
        "help": "handler indices the page sends to /queue/join (None: no check)"})
    join_bytes: int = field(default=1024 ** 2, metadata={"help": "largest /queue/join body"})
    upload_dir: Path | None = field(default=None, metadata={"help": "Gradio's upload folder"})
    upload_cap_bytes: int = field(default=2 * 1024 ** 3, metadata={"help": "refuse uploads above this total"})


def guard_launch_kwargs(studio, demo) -> dict:
    """launch() arguments that install the guard and bound per-page memory; also turns on Gradio's
    upload cleanup (every ttl/4, files older than ttl), which must be set before launch."""
    from starlette.middleware import Middleware
    from gradio.utils import get_upload_folder

    lim = studio.limits
    hide_value_loaders(demo)
    demo.api_open = False  # /run/<name> and /api/<name> would run a queued handler outside the queue
    demo.delete_cache = (min(600, max(1, lim.upload_ttl_s // 4)), lim.upload_ttl_s)
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public" and fn.api_name}
    origins = {o.rstrip("/").lower() for o in lim.origins}
    if os.environ.get("SPACE_HOST"):  # a Space's own address, which its proxy serves the page from
        origins.add(f"https://{os.environ['SPACE_HOST']}".lower())
    config = GuardConfig(api_names=public, origins=origins, max_failures=lim.login_failures,
                         page_fns=page_handlers(demo), join_bytes=2 ** 20 + 6 * lim.max_question_chars,
                         upload_dir=Path(get_upload_folder()), upload_cap_bytes=lim.upload_cache_bytes)
    return {"app_kwargs": {"middleware": [Middleware(ServerGuard, config=config)]},
            "state_session_capacity": lim.max_visitors}


def page_handlers(demo) -> set[int]:
    """Indices of the handlers a page triggers through the queue: all but those bound to `unload`
    alone (Gradio's /unload route runs them in the server; the page never joins the queue for them)."""
    return {i for i, fn in demo.fns.items() if any(event != "unload" for _, event in fn.targets)}


def hide_value_loaders(demo) -> None:
    """Make private the load events Gradio adds for components whose value is a callable (it names
    them /lambda, /lambda_1, ... and publishes them): they are the page's own refreshes, not API."""
    for block in demo.blocks.values():
        dep = getattr(block, "load_event", None)
        fn = demo.fns.get(dep.get("id")) if isinstance(dep, dict) else None
        if fn is not None:
            fn.api_visibility = "private"


class LoginThrottle:
    """Recent login failures per key (an address or a user name), with a bounded number of keys."""

    def __init__(self, max_failures: int, window_s: float, max_keys: int = 10_000) -> None:
        self.max_failures, self.window_s, self.max_keys = max_failures, window_s, max_keys
        self._fails: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque:
        q = self._fails.get(key) or deque()
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def wait_s(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until these keys may try again (0 when they may now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = [self.window_s - (now - q[0]) for q in (self._recent(k, now) for k in keys)
                     if len(q) >= self.max_failures]
        return max(waits, default=0.0)

    def fail(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                q = self._recent(key, now)
                q.append(now)
                self._fails[key] = q
                self._fails.move_to_end(key)
            while len(self._fails) > self.max_keys:
                self._fails.popitem(last=False)


def same_origin(headers: dict[str, str], origins: set[str] = frozenset()) -> bool:
    """True unless a browser says the request comes from another site (`origins` are accepted too)."""
    origin = headers.get("origin")
    if origin is not None and origin.rstrip("/").lower() in origins:
        return True
    if origin is not None:
        parts = urlsplit(origin)
        default = {"http": 80, "https": 443}.get(parts.scheme)
        netloc = parts.hostname or ""
        port = parts.port or default
        hosts = {h.strip().lower() for h in (headers.get("host", ""), headers.get("x-forwarded-host", "")) if h}
        ours = {netloc, f"{netloc}:{port}"} if port == default else {f"{netloc}:{port}"}
        return bool(parts.scheme in ("http", "https") and netloc and hosts & ours)
    site = headers.get("sec-fetch-site")
    return site != "cross-site" or headers.get("sec-fetch-mode") == "navigate"


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


class ServerGuard:
    """ASGI middleware: `FastAPI(middleware=[Middleware(ServerGuard, config=...)])`."""

    def __init__(self, app, config: GuardConfig) -> None:
        self.app, self.config = app, config
        self.throttle = LoginThrottle(config.max_failures, config.window_s)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if not same_origin(headers, self.config.origins):
            logger.warning("refused a cross-origin %s %s from %s", method, path, headers.get("origin"))
            return await self._reply(scope, send, 403, "cross-origin requests are refused")
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        if method == "POST" and path.rstrip("/").endswith("/login"):
            return await self._login(scope, receive, send)
        if method == "POST" and path.startswith(API_ROUTES):
            if route_name(path) not in self.config.api_names:
                return await self._reply(scope, send, 404, "Not Found")
        if method == "POST" and path.rstrip("/") == JOIN_ROUTE and self.config.page_fns is not None:
            return await self._join(scope, receive, send)
        if method == "POST" and path.rstrip("/") == "/gradio_api/upload" and self._upload_full():
            return await self._reply(scope, send, 507, "the server's upload space is full; try again later")
        await self.app(scope, receive, send_lax_cookies(send))

    async def _join(self, scope, receive, send) -> None:
        """Pass a queue join on only for a handler the page triggers (see page_handlers)."""
        body, messages = await _read_body(receive, self.config.join_bytes + 1, stop=True)
        if len(body) > self.config.join_bytes:
            return await self._reply(scope, send, 413, "the request is too large")
        try:
            index = json.loads(body).get("fn_index")
        except (ValueError, AttributeError):
            index = None
        if not isinstance(index, int) or isinstance(index, bool) or index not in self.config.page_fns:
            return await self._reply(scope, send, 404, "Not Found")
        await self.app(scope, _replay(messages, receive), send_lax_cookies(send))

    def _upload_full(self) -> bool:
        folder = self.config.upload_dir
        return folder is not None and folder.is_dir() and folder_bytes(folder) > self.config.upload_cap_bytes

    async def _login(self, scope, receive, send) -> None:
        body, messages = await _read_body(receive)
        user = _form_field(body, "username")
        address = (scope.get("client") or ("?",))[0]
        keys = [f"addr:{address}", f"user:{user}"]
        wait = self.throttle.wait_s(keys)
        if wait > 0:
            logger.warning("login refused (throttled, %.0f s left): user %r from %s", wait, user, address)
            return await self._reply(scope, send, 429, f"too many failed logins; try again in {wait:.0f} s")
        status: dict = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, _replay(messages, receive), send_lax_cookies(watch))
        if status.get("code") == 200:
            logger.info("login: user %r from %s", user, address)
        else:
            self.throttle.fail(keys)
            logger.warning("failed login: user %r from %s", user, address)

    @staticmethod
    async def _reply(scope, send, code: int, text: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": text}).encode()
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def route_name(path: str) -> str:
    """The endpoint a call route names: /gradio_api/call/<name>, /call/v2/<name>, /run/<name>, /api/<name>."""
    parts = path.strip("/").split("/")
    if parts[2:3] == ["v2"] and parts[1] == "call":
        parts = parts[:2] + parts[3:]
    return parts[2] if len(parts) > 2 else ""


def send_lax_cookies(send):
    """Wrap `send` so that every Set-Cookie says SameSite=Lax (Gradio's login cookie says None)."""
    async def wrapped(message):
        if message["type"] == "http.response.start":
            message["headers"] = [(k, _lax(v) if k.lower() == b"set-cookie" else v)
                                  for k, v in message.get("headers", [])]
        await send(message)
    return wrapped


def _lax(cookie: bytes) -> bytes:
    parts = [p for p in cookie.split(b";") if not p.strip().lower().startswith(b"samesite")]
    return b";".join(parts + [b" SameSite=Lax"])


async def _read_body(receive, limit: int = 64 * 1024, stop: bool = False) -> tuple[bytes, list]:
    """The request body (up to `limit` bytes kept) and the messages, to pass on unchanged; with
    `stop`, reading ends once `limit` bytes are in (the caller refuses such a request)."""
    messages, body = [], b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body = (body + message.get("body", b""))[:limit]
        if not message.get("more_body") or (stop and len(body) >= limit):
            break
    return body, messages


def _replay(messages: list, receive):
    """A `receive` that gives the messages already read, then the connection's own."""
    pending = list(messages)

    async def replay():
        return pending.pop(0) if pending else await receive()
    return replay


def _form_field(body: bytes, name: str) -> str:
    from urllib.parse import parse_qs

    values = parse_qs(body.decode("utf-8", "replace")).get(name) or [""]
    return values[0].strip()[:80]
