-- Execs: one row per `aegis exec`, a process run in an instance's VM next to its server. The
-- output bytes live in files under the instance's directory (execs/<id>/), not here. The rows
-- of an instance go with it: `delete_instance` deletes them in its transaction (the cascade
-- covers a connection that enforces foreign keys, the explicit delete one that does not).
CREATE TABLE execs (
    id         TEXT PRIMARY KEY,
    instance   TEXT NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    command    TEXT NOT NULL,             -- JSON [string]
    tty        INTEGER NOT NULL,          -- 1: on a pseudo-terminal (stdout is its screen)
    state      TEXT NOT NULL,             -- running, exited, failed
    exit_code  INTEGER,
    error      TEXT,
    created_at TEXT NOT NULL,
    ended_at   TEXT
);
CREATE INDEX execs_instance ON execs (instance);
CREATE INDEX execs_state ON execs (state);
