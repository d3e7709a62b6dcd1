"""What one visitor's request may cost the server, and the checks that run before an Ask is queued.

`ServerLimits` holds every bound of docs/public.md's table that the app enforces (the picture cap and
--max-concurrent live on `Studio` itself). `ask_validator` and `fork_validator` are Gradio's
`validator=` for the Ask and fork events: they run when a request joins the queue, so an over-long
question or a visitor (`visitor_key`) who already has `max_asks_per_visitor` Asks and forks waiting
or running is refused at once, without a queue slot.
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from core.frames import VideoLimits

TEMPERATURE_MAX, OPS_MAX, NEW_TOKENS = 1.5, 8, (16, 2048)  # the Ask sliders' ranges


@dataclass
class ServerLimits:
    """Per-request and per-visitor bounds (flags in app.py; table in docs/public.md)."""

    max_question_chars: int = field(default=2000, metadata={"help": "a longer question is refused before queueing"})
    video: VideoLimits = field(default_factory=VideoLimits, metadata={"help": "frame size, frames, duration"})
    max_asks_per_visitor: int = field(default=2, metadata={
        "help": "Asks and forks one public visitor may have waiting or running"})
    max_visitors: int = field(default=1000, metadata={"help": "page sessions kept in memory (oldest forgotten)"})
    quote_chars: int = field(default=200, metadata={"help": "characters of the question the chat quotes"})
    login_failures: int = field(default=10, metadata={"help": "wrong passwords per address or user per minute"})
    upload_ttl_s: int = field(default=3600, metadata={"help": "uploads older than this are deleted"})
    upload_cache_bytes: int = field(default=2 * 1024 ** 3, metadata={"help": "uploads refused above this total"})
    store_bytes_per_visitor: int = field(default=200 * 1024 ** 2, metadata={"help": "stored pictures per visitor"})
    store_bytes: int = field(default=5 * 1024 ** 3, metadata={"help": "stored pictures in all (public mode)"})
    origins: list[str] = field(default_factory=list, metadata={"help": "origins served besides the Host's own"})
    store_keep_s: int = field(default=15 * 60, metadata={"help": "a session is not evicted this soon after its last write"})


def question_problem(question, limits: ServerLimits) -> str | None:
    """Why a question is refused, or None."""
    if not isinstance(question, str) or not question.strip():
        return "type a question"
    if len(question) > limits.max_question_chars:
        return (f"the question is {len(question):,} characters; the limit is {limits.max_question_chars:,}. "
                "Shorten it.")
    return None


def quote(question: str, limits: ServerLimits) -> str:
    """The question as the chat shows it: whole when short, its start otherwise (the stream resends
    the chat on every update, so a long question must not ride along)."""
    q = question.strip()
    return q if len(q) <= limits.quote_chars else q[: limits.quote_chars - 1] + "…"


def bounded(value, lo: float, hi: float) -> float:
    """A slider value within [lo, hi]; ValueError for NaN, infinities and non-numbers."""
    x = float(0 if value is None else value)
    if not math.isfinite(x):
        raise ValueError(f"{value!r} is not a finite number")
    return min(max(x, lo), hi)


def ask_numbers(temp, ops, new_tokens) -> tuple[float, int, int]:
    """(temperature, max operations, max new tokens) clamped to the sliders; ValueError if not numbers."""
    return (bounded(temp, 0.0, TEMPERATURE_MAX), int(bounded(ops, 1, OPS_MAX)),
            int(bounded(new_tokens, *NEW_TOKENS)))


def client_address(headers, peer: str | None) -> str:
    """Who is asking, by address: the peer, or behind a proxy on a private address (a Space), the
    address that proxy appended to X-Forwarded-For (the last entry; earlier ones are the client's word)."""
    peer = peer or "?"
    forwarded = (headers.get("x-forwarded-for") or "").split(",")[-1].strip()
    try:
        behind_proxy = ipaddress.ip_address(peer).is_private
    except ValueError:
        behind_proxy = False
    return forwarded if forwarded and behind_proxy else peer


def visitor_key(request) -> str:
    """Who a visitor is for the per-visitor caps (Asks and forks at once, stored pictures): the login,
    else the Hugging Face account signed in with the Space's OAuth, else the client's address (hashed:
    the session log keeps it). Unlike the session hash, none of these is the client's to pick."""
    user = getattr(request, "username", None)
    if user:
        return f"user:{user}"
    account = hf_account(getattr(request, "request", None) or request)
    if account:
        return f"hf:{account}"
    client = getattr(request, "client", None)
    address = client_address(getattr(request, "headers", {}) or {}, getattr(client, "host", None))
    return "addr:" + hashlib.sha256(address.encode()).hexdigest()[:16]


def hf_account(request) -> str | None:
    """The account signed in with Hugging Face OAuth (a Space with `hf_oauth: true`), from the
    session Gradio's OAuth keeps; None without OAuth, a sign-in, or once it expired."""
    scope = getattr(request, "scope", None)
    session = scope.get("session") if isinstance(scope, dict) else None
    info = session.get("oauth_info") if isinstance(session, dict) else None
    if not isinstance(info, dict) or (info.get("expires_at") or math.inf) < time.time():
        return None
    name = (info.get("userinfo") or {}).get("preferred_username")
    return name if isinstance(name, str) and name else None


CAPPED = ("ask", "fork")
"""The endpoints that run the model: together they count against --max-asks-per-visitor."""
MODEL_RUNS = "model-runs"
"""Their shared concurrency_id: --max-concurrent bounds Asks and forks together."""


def live_events(request, api_names: tuple[str, ...], key: str) -> int:
    """Events of these endpoints this visitor has waiting or running in the queue of the app serving `request`."""
    app = getattr(getattr(request, "request", None), "app", None)
    queue = getattr(app.get_blocks(), "_queue", None) if hasattr(app, "get_blocks") else None
    if queue is None:
        return 0
    n = 0
    for event in list(queue.event_ids_to_events.values()):
        if getattr(event.fn, "api_name", None) in api_names and visitor_key(event_request(event)) == key:
            n += 1
    return n


def event_request(event):
    """A view of a queued event's request with the fields visitor_key reads."""
    request = event.request
    return type("EventRequest", (), {"username": event.username, "client": getattr(request, "client", None),
                                     "headers": getattr(request, "headers", {}), "request": request})()


def busy_problem(studio, request) -> str | None:
    """Why a public visitor may not start another Ask or fork now (None when they may)."""
    limits = studio.limits
    if not studio.isolate:  # operators (local, logged in) are trusted
        return None
    # Gradio runs validators before this request joins the queue: the count is of the others
    if live_events(request, CAPPED, visitor_key(request)) >= limits.max_asks_per_visitor:
        return (f"you already have {limits.max_asks_per_visitor} questions or forks waiting or running; "
                "wait for one to finish")
    return None


def ask_validator(studio):
    """Gradio's validator= for /ask (whose ten inputs it mirrors): refuses a bad question or a visitor
    over the Ask cap before queueing."""
    import gradio as gr

    limits = studio.limits
    n_inputs = 10

    def validate(media, question, backend, model, tools, temp, ops, new_tokens, guide, compare,
                 request):
        # only the length here: an empty question gets its message from the Ask itself, in the status line
        problem = question_problem(question, limits) if isinstance(question, str) and question.strip() else None
        problem = problem or busy_problem(studio, request)
        verdicts = [gr.validate(True, "")] * n_inputs
        if problem is not None:
            verdicts[1] = gr.validate(False, problem)
        return verdicts

    # Gradio fills a positional parameter annotated gr.Request; a string annotation (this module's
    # `from __future__ import annotations`) would not resolve, since gradio is imported here only
    validate.__annotations__["request"] = gr.Request
    return validate


def fork_validator(studio):
    """Gradio's validator= for /fork (whose six inputs it mirrors): a fork runs the model, so it
    counts against the same per-visitor cap as an Ask."""
    import gradio as gr

    def validate(sid, step, kind, box, frames, text, request):
        problem = busy_problem(studio, request)
        return [gr.validate(problem is None, problem or "")] + [gr.validate(True, "")] * 5

    validate.__annotations__["request"] = gr.Request
    return validate


def remember_visitor(visitors: OrderedDict, session_hash: str, token: str, cap: int) -> None:
    """Tie a page's session to its visitor token, forgetting the oldest pages beyond `cap` (an API
    client that never unloads must not grow the map without end). Call under the studio lock."""
    visitors[session_hash] = token
    visitors.move_to_end(session_hash)
    while len(visitors) > cap:
        visitors.popitem(last=False)
