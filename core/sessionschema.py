"""The session log's schema: the trajectories' tables (sessions, steps, images) and their versions.

Schema changes are named, ordered steps (sqlite-utils `Migrations`), applied when a log opens; the
`_sqlite_migrations` table records which ran. The first step creates the tables only where they are
missing, so a file made before migrations existed opens and is brought up to date the same way.
The Studio's own tables (annotations, jobs, metrics) are versioned apart, in app/shared/studio_log.py.
"""
from __future__ import annotations

from sqlite_utils.migrations import Migrations

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    ended_at REAL,
    question TEXT NOT NULL,
    choices TEXT,               -- JSON list or NULL
    media_kind TEXT,            -- image | video | frames
    media_path TEXT,
    media_sha TEXT,             -- the original image (or first overview frame)
    media_json TEXT,            -- core.trajectory.Media as JSON
    model TEXT,
    backend TEXT,
    client TEXT,                -- app | eval:<run> | train:<job_id> | import
    status TEXT NOT NULL DEFAULT 'running',
    error TEXT,
    answer TEXT,
    ground_truth TEXT,
    correct INTEGER,            -- 1 | 0 | NULL (unknown)
    n_steps INTEGER NOT NULL DEFAULT 0,
    n_ops INTEGER NOT NULL DEFAULT 0,
    n_errors INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    tools_enabled INTEGER NOT NULL DEFAULT 1,
    guideline TEXT,
    config_json TEXT,
    meta_json TEXT,
    compare_of TEXT,            -- the session this tools-off run was compared with
    host TEXT,
    pid INTEGER                 -- writer process, to find sessions a crash left running
);
CREATE TABLE IF NOT EXISTS images (
    sha TEXT PRIMARY KEY,
    path TEXT,
    width INTEGER,
    height INTEGER,
    bytes INTEGER,
    thumb BLOB,                 -- WebP, longest side 128 px
    created_at REAL
);
CREATE TABLE IF NOT EXISTS steps (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    tool TEXT,
    arguments TEXT,             -- JSON
    error TEXT,
    observation TEXT,
    target_image INTEGER,
    box_norm TEXT,              -- JSON [x0,y0,x1,y1] in [0,1]
    box_px TEXT,                -- JSON, pixels of the target image
    source_box_px TEXT,         -- JSON, pixels of the original input
    frames TEXT,                -- JSON, 1-based overview frame numbers
    image_shas TEXT,            -- JSON list of images.sha returned by the operation
    tokens_in INTEGER, tokens_out INTEGER,
    gen_seconds REAL, tool_seconds REAL,
    finish_reason TEXT,
    started_at REAL,
    PRIMARY KEY (session_id, idx)
);
CREATE INDEX IF NOT EXISTS idx_sessions_created ON sessions(created_at);
CREATE INDEX IF NOT EXISTS idx_sessions_model ON sessions(model, correct);
CREATE INDEX IF NOT EXISTS idx_sessions_status ON sessions(status);
CREATE INDEX IF NOT EXISTS idx_sessions_question ON sessions(question);
CREATE INDEX IF NOT EXISTS idx_sessions_compare ON sessions(compare_of);
"""

MIGRATIONS = Migrations("pixel-reasoner-sessions")


def execute_script(db, script: str) -> None:
    """Run `;`-separated statements inside the caller's transaction (sqlite3's executescript
    would commit it first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@MIGRATIONS()
def m001_sessions(db) -> None:
    execute_script(db, SCHEMA)
    if "sessions_fts" not in db.table_names():
        db.table("sessions").enable_fts(["question", "answer"], create_triggers=True, tokenize="porter")
    if "steps_fts" not in db.table_names():
        db.table("steps").enable_fts(["text"], create_triggers=True, tokenize="porter")


@MIGRATIONS()
def m002_scorer(db) -> None:
    """The name of the rule that judged `correct` (core.scoring.SCORERS), stored beside it."""
    db.execute("ALTER TABLE sessions ADD COLUMN scorer TEXT")


@MIGRATIONS()
def m003_owner(db) -> None:
    """The visitor who asked: public mode lists a visitor's own sessions only."""
    db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS idx_sessions_owner ON sessions(owner, created_at)")


@MIGRATIONS()
def m004_narrow_fts_triggers(db) -> None:
    """Re-index a row's text only when that text changes: sqlite-utils' update triggers fire on any
    column, so each step's counter update re-tokenized its session's question and answer."""
    for table, cols in (("sessions", ("question", "answer")), ("steps", ("text",))):
        name = f"{table}_au"
        quoted = ", ".join(f'"{c}"' for c in cols)
        old = ", ".join(f'old."{c}"' for c in cols)
        new = ", ".join(f'new."{c}"' for c in cols)
        db.execute(f'DROP TRIGGER IF EXISTS "{name}"')
        db.execute(f'CREATE TRIGGER "{name}" AFTER UPDATE OF {quoted} ON "{table}" BEGIN\n'
                   f'  INSERT INTO "{table}_fts" ("{table}_fts", rowid, {quoted}) VALUES(\'delete\', old.rowid, {old});\n'
                   f'  INSERT INTO "{table}_fts" (rowid, {quoted}) VALUES (new.rowid, {new});\nEND')


@MIGRATIONS()
def m005_fork_of(db) -> None:
    """A fork's parent session and the step it was forked at (core/fork.py, `meta.fork_of`); rows
    logged before the columns existed are filled from their meta."""
    db.execute("ALTER TABLE sessions ADD COLUMN fork_of TEXT")
    db.execute("ALTER TABLE sessions ADD COLUMN fork_step INTEGER")
    db.execute("CREATE INDEX IF NOT EXISTS idx_sessions_fork ON sessions(fork_of)")
    db.execute("UPDATE sessions SET fork_of = json_extract(meta_json, '$.fork_of.session'), "
               "fork_step = json_extract(meta_json, '$.fork_of.step') "
               "WHERE json_valid(meta_json) AND json_type(meta_json, '$.fork_of.session') = 'text'")


@MIGRATIONS()
def m006_confidence_and_familiarity(db) -> None:
    """How sure the model was (core/confidence.py) and whether the picture was like its training
    pictures (core/familiarity.py): per session the answer's probability and the familiarity check,
    per step the mean log-probability and the least sure tokens."""
    db.execute("ALTER TABLE sessions ADD COLUMN answer_confidence REAL")
    db.execute("ALTER TABLE sessions ADD COLUMN familiar INTEGER")
    db.execute("ALTER TABLE sessions ADD COLUMN familiarity REAL")
    db.execute("ALTER TABLE steps ADD COLUMN mean_logprob REAL")
    db.execute("ALTER TABLE steps ADD COLUMN unsure TEXT")


@MIGRATIONS()
def m007_quota_key(db) -> None:
    """Who a session's stored pictures count against (a public server's per-visitor quota): the
    login, else a hash of the client's address, which a client cannot change by calling afresh
    (the `owner` an API client gets is its session hash, which it picks)."""
    db.execute("ALTER TABLE sessions ADD COLUMN quota_key TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS idx_sessions_quota_key ON sessions(quota_key, created_at)")
