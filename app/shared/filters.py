"""Which sessions a tab lists: the filter form's values (text, model, outcome, ops, dates, page) as a
SessionFilter, with a clear error for a value that does not fit. Inspect and Annotate both use it."""
from __future__ import annotations

from datetime import datetime, timedelta

from core.sessionquery import SessionFilter

PAGE_SIZE = 25
ANY = "any"
OUTCOMES = [ANY, "correct", "incorrect", "unknown", "unsure answers", "unfamiliar pictures"]
UNSURE = {"unsure answers": "answer", "unfamiliar pictures": "picture"}  # outcomes on how sure the model was


def parse_date(text: str | None, end: bool = False) -> float | None:
    """'2025-01-31' or '2025-01-31 14:00' to epoch seconds; a clear error otherwise. With `end`, the
    end of that day or minute, so "until 2025-01-31" includes the 31st."""
    text = (text or "").strip()
    if not text:
        return None
    for fmt, span in (("%Y-%m-%d", timedelta(days=1)), ("%Y-%m-%d %H:%M", timedelta(minutes=1))):
        try:
            return (datetime.strptime(text, fmt) + (span if end else timedelta(0))).timestamp()
        except ValueError:
            continue
    raise ValueError(f"dates look like 2025-01-31 or 2025-01-31 14:00, not {text!r}")


def make_filter(text: str = "", model: str = ANY, outcome: str = ANY, min_ops=None, max_ops=None,
                has_errors: str = ANY, annotated: str = ANY, since: str = "", until: str = "", page: int = 1,
                page_size: int = PAGE_SIZE) -> SessionFilter:
    yes_no = {"yes": True, "no": False}

    def count(v):  # SQLite integers stop at 2**63: clamp what a form or an API call sends
        return None if v in (None, "") else min(max(int(v), 0), 10 ** 9)

    min_ops, max_ops, page = count(min_ops), count(max_ops), count(page) or 1
    return SessionFilter(
        text=text or None, model=None if model in (None, "", ANY) else model,
        outcome=None if outcome in (None, "", ANY) or outcome in UNSURE else outcome, unsure=UNSURE.get(outcome),
        min_ops=min_ops, max_ops=max_ops,
        has_errors=yes_no.get(has_errors), annotated=yes_no.get(annotated), since=parse_date(since),
        until=parse_date(until, end=True), limit=page_size, offset=max(0, int(page or 1) - 1) * page_size)
