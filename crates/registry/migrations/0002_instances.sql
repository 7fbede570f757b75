-- Serve mode: one row per ServeTarget (an instance). Runtime state (running, paused...) is not
-- stored: after a restart every instance is terminated and wakes on its next connection.
CREATE TABLE instances (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    target     TEXT NOT NULL,             -- JSON CreateInstance
    endpoints  TEXT NOT NULL,             -- JSON [Endpoint]; host ports stay stable
    created_at TEXT NOT NULL
);
