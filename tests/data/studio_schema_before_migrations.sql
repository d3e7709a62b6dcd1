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
    pid INTEGER,                -- writer process, to find sessions a crash left running
    trajectory_json TEXT        -- the whole record, written when the session ends
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
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    step_idx INTEGER,           -- NULL: the whole trajectory
    label TEXT,
    comment TEXT,
    corrected_answer TEXT,
    corrected_box TEXT,         -- JSON [x0,y0,x1,y1] normalized
    corrected_frames TEXT,      -- JSON list
    corrected_text TEXT,
    annotator TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,         -- sft | rl | eval
    cmd TEXT NOT NULL,          -- JSON argv
    cwd TEXT,
    pid INTEGER, pgid INTEGER,
    status TEXT NOT NULL DEFAULT 'queued',  -- queued | running | done | failed | cancelled
    exit_code INTEGER,
    log_path TEXT, metrics_path TEXT, out_dir TEXT,
    dataset TEXT,
    created_at REAL NOT NULL, started_at REAL, ended_at REAL,
    note TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    t REAL
);
CREATE INDEX IF NOT EXISTS idx_sessions_created ON sessions(created_at);
CREATE INDEX IF NOT EXISTS idx_sessions_model ON sessions(model, correct);
CREATE INDEX IF NOT EXISTS idx_sessions_status ON sessions(status);
CREATE INDEX IF NOT EXISTS idx_sessions_question ON sessions(question);
CREATE INDEX IF NOT EXISTS idx_sessions_compare ON sessions(compare_of);
CREATE INDEX IF NOT EXISTS idx_annotations_session ON annotations(session_id, step_idx);
CREATE INDEX IF NOT EXISTS idx_metrics_job ON metrics(job_id, step);
