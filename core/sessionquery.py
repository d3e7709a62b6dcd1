"""Finding sessions in the log: the Inspect table's filters, pages and chart rows, all in SQL."""
from __future__ import annotations

from dataclasses import dataclass


def fts_query(text: str | None) -> str | None:
    """Search text as an FTS5 query of quoted words (all must match); None when no word is left.

    Quotes, NUL and other control characters and lone surrogates are dropped first: they are not
    words, and FTS5 (or the driver) would refuse the query with a syntax error."""
    if not text:
        return None
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "ignore")
    text = "".join(" " if ch == '"' or ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    words = text.split()[:64]
    return " ".join(f'"{w}"' for w in words) or None


@dataclass
class SessionFilter:
    """What the Inspect table asks for; every field is optional and applied in SQL."""

    model: str | None = None
    outcome: str | None = None  # correct | incorrect | unknown
    min_ops: int | None = None
    max_ops: int | None = None
    has_errors: bool | None = None
    annotated: bool | None = None  # applied by the Studio's log (app/shared/studio_log.py)
    since: float | None = None  # epoch seconds
    until: float | None = None
    text: str | None = None  # full-text search over question, answer and reasoning
    status: str | None = None
    client: str | None = None  # prefix match: "eval" matches "eval:run1"
    question: str | None = None  # exact question (side-by-side comparison)
    tool: str | None = None  # sessions with at least one step calling this operation
    owner: str | None = None  # only this visitor's sessions (public mode)
    fork_of: str | None = None  # only the forks of this session
    forks: bool | None = None  # True: forks only; False: no forks (the sessions asked afresh)
    unsure: str | None = None  # "answer": answer confidence under 0.5 | "picture": unlike the training pictures
    limit: int = 50
    offset: int = 0


class SessionQueries:
    """Read-only queries over `sessions` and `steps`, mixed into SessionLog (which gives `db`).
    A subclass adds its own columns and filters through LIST_EXTRA and `_extra_where`."""

    LIST_EXTRA = ""  # extra columns of list_sessions, each preceded by ", "

    def _extra_where(self, f: SessionFilter) -> list[str]:
        return []

    def _where(self, f: SessionFilter) -> tuple[str, list]:
        clauses, args = [], []
        if f.model:
            clauses.append("s.model = ?"), args.append(f.model)
        if f.outcome == "correct":
            clauses.append("s.correct = 1")
        elif f.outcome == "incorrect":
            clauses.append("s.correct = 0")
        elif f.outcome == "unknown":
            clauses.append("s.correct IS NULL")
        if f.min_ops is not None:
            clauses.append("s.n_ops >= ?"), args.append(f.min_ops)
        if f.max_ops is not None:
            clauses.append("s.n_ops <= ?"), args.append(f.max_ops)
        if f.has_errors is not None:
            clauses.append("s.n_errors > 0" if f.has_errors else "s.n_errors = 0")
        clauses.extend(self._extra_where(f))
        if f.since is not None:
            clauses.append("s.created_at >= ?"), args.append(f.since)
        if f.until is not None:
            clauses.append("s.created_at < ?"), args.append(f.until)
        if f.status:
            clauses.append("s.status = ?"), args.append(f.status)
        if f.client:
            clauses.append("(s.client = ? OR s.client LIKE ?)"), args.extend([f.client, f.client + ":%"])
        if f.question:
            clauses.append("s.question = ?"), args.append(f.question)
        if f.owner is not None:
            clauses.append("s.owner = ?"), args.append(f.owner)
        if f.fork_of:
            clauses.append("s.fork_of = ?"), args.append(f.fork_of)
        if f.forks is not None:
            clauses.append("s.fork_of IS NOT NULL" if f.forks else "s.fork_of IS NULL")
        if f.unsure == "answer":
            clauses.append("s.answer_confidence < 0.5")
        elif f.unsure == "picture":
            clauses.append("s.familiar = 0")
        if f.tool:
            clauses.append("EXISTS (SELECT 1 FROM steps t WHERE t.session_id = s.id AND t.tool = ? "
                           "AND t.error IS NULL)"), args.append(f.tool)
        q = fts_query(f.text)
        if q:
            clauses.append(
                "(s.rowid IN (SELECT rowid FROM sessions_fts WHERE sessions_fts MATCH ?) OR s.id IN "
                "(SELECT st.session_id FROM steps st WHERE st.rowid IN "
                "(SELECT rowid FROM steps_fts WHERE steps_fts MATCH ?)))")
            args.extend([q, q])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    LIST_COLUMNS = ("s.id, s.created_at, s.question, s.media_kind, s.model, s.backend, s.client, s.status, s.answer, "
                    "s.ground_truth, s.correct, s.scorer, s.n_steps, s.n_ops, s.n_errors, s.seconds, s.tools_enabled, "
                    "s.compare_of, s.fork_of, s.fork_step")

    def list_sessions(self, f: SessionFilter | None = None) -> tuple[list[dict], int]:
        """One page of sessions (newest first) and the total count matching the filter."""
        f = f or SessionFilter()
        where, args = self._where(f)
        db = self.db
        total = db.execute(f"SELECT count(*) FROM sessions s{where}", args).fetchone()[0]
        rows = list(db.query(
            f"SELECT {self.LIST_COLUMNS}{self.LIST_EXTRA} FROM sessions s{where} "
            "ORDER BY s.created_at DESC, s.id LIMIT ? OFFSET ?", [*args, f.limit, f.offset]))
        return rows, total

    def forks(self, session_ids: list[str], owner: str | None = None) -> dict[str, list[dict]]:
        """The forks of each given session (oldest first; `owner`: that visitor's only), as rows of
        `list_sessions`: the branches the Inspect table shows under their parent."""
        out: dict[str, list[dict]] = {sid: [] for sid in session_ids}
        for i in range(0, len(session_ids), 500):
            chunk = session_ids[i:i + 500]
            where = f" WHERE s.fork_of IN ({', '.join('?' * len(chunk))})" + (" AND s.owner = ?" if owner is not None else "")
            for row in self.db.query(f"SELECT {self.LIST_COLUMNS}{self.LIST_EXTRA} FROM sessions s{where} "
                                     "ORDER BY s.created_at, s.id", [*chunk, *([owner] if owner is not None else [])]):
                out[row["fork_of"]].append(row)
        return out

    def models(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT model FROM sessions WHERE model IS NOT NULL "
                                              "ORDER BY model")]

    def stats(self, f: SessionFilter | None = None) -> dict[str, list[dict]]:
        """Rows for the Inspect charts: ops per session, RaPR by day and by model, step latency."""
        where, args = self._where(f or SessionFilter())
        db = self.db
        base = f"FROM sessions s{where}"
        and_ = " AND " if where else " WHERE "
        return {
            "ops": list(db.query(f"SELECT s.n_ops AS n_ops, count(*) AS sessions {base} GROUP BY s.n_ops "
                                 "ORDER BY s.n_ops", args)),
            "rapr_by_day": list(db.query(
                "SELECT date(s.created_at, 'unixepoch') AS day, s.model AS model, count(*) AS sessions, "
                f"avg(s.n_ops > 0) AS rapr, avg(s.correct) AS accuracy {base}{and_}s.tools_enabled = 1 "
                "GROUP BY day, s.model ORDER BY day", args)),
            "rapr_by_model": list(db.query(
                f"SELECT s.model AS model, count(*) AS sessions, avg(s.n_ops > 0) AS rapr, avg(s.correct) AS accuracy "
                f"{base}{and_}s.tools_enabled = 1 GROUP BY s.model ORDER BY s.model", args)),
            "latency": list(db.query(
                "SELECT st.session_id, st.idx, st.tool, st.error IS NOT NULL AS is_error, st.gen_seconds, "
                f"st.tool_seconds, st.tokens_out FROM steps st JOIN sessions s ON s.id = st.session_id{where} "
                "ORDER BY s.created_at DESC LIMIT 5000", args)),
        }
