-- Tasks: one row per `aegis run`; output bytes live in files, counted here.
CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    command       TEXT NOT NULL,          -- JSON array of strings
    image         TEXT NOT NULL,
    vcpus         INTEGER NOT NULL,
    memory_mib    INTEGER NOT NULL,
    timeout_secs  INTEGER,
    exit_code     INTEGER,
    error         TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    ended_at      TEXT,
    stdout_bytes  INTEGER NOT NULL DEFAULT 0,
    stderr_bytes  INTEGER NOT NULL DEFAULT 0,
    artifacts_dir TEXT,
    guest_kernel  TEXT
);
CREATE INDEX tasks_created ON tasks (created_at);

-- Live VMM processes, so a restarted daemon can find and clean up what a crash left behind.
CREATE TABLE vms (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,             -- the task (or instance) the VM serves
    backend    TEXT NOT NULL,
    pid        INTEGER,
    run_dir    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
