"""Disk quotas of the image store in public mode: per visitor and in all (see docs/public.md).

Before a public visitor's Ask or fork, `make_room` evicts that visitor's oldest sessions while their
stored pictures are over `store_bytes_per_visitor`, then the oldest visitor sessions of anyone while the
store is over `store_bytes`. A session is never evicted while it runs or within `store_keep_s` of
its last write (an open page still shows it); operators' sessions (logged in, or made outside public
mode) are never evicted. A picture file goes only when no remaining session refers to it. When no
session may go, the Ask is refused with a `QuotaError` that says why.

A visitor, for the quota, is a session's `quota_key` (app/public/limits.py's `visitor_key`: the
login, else the client's address), not its `owner`: an API client picks its own session hash, so
keyed by owner it could start afresh with every call.
"""
from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)

VISITOR_OWNERS = "(owner LIKE 'visitor:%' OR owner LIKE 'tab:%')"

SHAS_OF = """
SELECT json_extract(s.media_json, '$.image.sha') FROM sessions s WHERE s.id IN ({ids})
UNION SELECT json_extract(s.media_json, '$.model_view.sha') FROM sessions s WHERE s.id IN ({ids})
UNION SELECT json_extract(o.value, '$.sha') FROM sessions s, json_each(s.media_json, '$.overview') o
      WHERE s.id IN ({ids})
UNION SELECT json_extract(j.value, '$[0]') FROM steps t, json_each(t.image_shas) j WHERE t.session_id IN ({ids})
"""


class QuotaError(RuntimeError):
    """No room can be made for another session; the message says which quota."""


def _shas(db, id_sql: str, args: list) -> set[str]:
    rows = db.execute(SHAS_OF.format(ids=id_sql), args * 4).fetchall()
    return {sha for (sha,) in rows if sha}


def key_bytes(db, key: str) -> int:
    """Bytes of the distinct stored pictures that the sessions of one quota key refer to."""
    shas = _shas(db, "SELECT id FROM sessions WHERE quota_key = ?", [key])
    return _bytes(db, shas)


def _bytes(db, shas: set[str]) -> int:
    total, shas = 0, list(shas)
    for i in range(0, len(shas), 500):
        chunk = shas[i:i + 500]
        total += db.execute(f"SELECT coalesce(sum(bytes), 0) FROM images WHERE sha IN ({','.join('?' * len(chunk))})",
                            chunk).fetchone()[0]
    return total


def store_bytes(db) -> int:
    return db.execute("SELECT coalesce(sum(bytes), 0) FROM images").fetchone()[0]


def _oldest_evictable(db, key: str | None, before: float) -> str | None:
    """The oldest session that may go: a visitor's (of this quota key, if given), not running, last
    written before `before`."""
    where = VISITOR_OWNERS + (" AND quota_key = ?" if key is not None else "")
    row = db.execute(f"SELECT id FROM sessions WHERE {where} AND status != 'running' "
                     "AND coalesce(ended_at, created_at) < ? ORDER BY created_at LIMIT 1",
                     ([key] if key is not None else []) + [before]).fetchone()
    return row[0] if row else None


def evict(log, session_id: str) -> int:
    """Delete one session and the picture files no other session refers to; returns bytes freed."""
    db = log.db
    shas = _shas(db, "?", [session_id])
    freed = 0
    log.delete_session(session_id)
    for sha in shas:
        pattern = f"%{sha}%"
        if db.execute("SELECT 1 FROM sessions WHERE media_json LIKE ? LIMIT 1", [pattern]).fetchone() or \
                db.execute("SELECT 1 FROM steps WHERE image_shas LIKE ? LIMIT 1", [pattern]).fetchone():
            continue
        freed += db.execute("SELECT coalesce(sum(bytes), 0) FROM images WHERE sha = ?", [sha]).fetchone()[0]
        db.execute("DELETE FROM images WHERE sha = ?", [sha])
        path = log.image_path(sha)
        if path is not None:
            path.unlink(missing_ok=True)
    logger.info("evicted session %s (%d pictures, %.1f MB freed)", session_id, len(shas), freed / 1e6)
    return freed


def make_room(studio, key: str | None) -> None:
    """Evict old visitor sessions until this visitor (a quota key) and the store are under their quotas."""
    if not studio.isolate or not key:
        return
    lim, log = studio.limits, studio.log
    before = time.time() - lim.store_keep_s
    with studio.lock:
        while key_bytes(log.db, key) > lim.store_bytes_per_visitor:
            sid = _oldest_evictable(log.db, key, before)
            if sid is None:
                raise QuotaError(f"your stored pictures are over {lim.store_bytes_per_visitor / 2 ** 20:.0f} MB; "
                                 f"ask again in {lim.store_keep_s // 60 or 1} minutes, when older sessions may be removed")
            evict(log, sid)
        while store_bytes(log.db) > lim.store_bytes:
            sid = _oldest_evictable(log.db, None, before)
            if sid is None:
                raise QuotaError("the server's picture storage is full; try again later")
            evict(log, sid)
