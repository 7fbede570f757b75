-- Workspaces: durable directories mounted at /workspace in guests. Only named workspaces have
-- a row (host-path workspaces are not recorded). Who holds a workspace is not stored: tasks
-- hold theirs while they run (and die with the daemon), instances for their whole life (and
-- are reloaded from `instances`, whose target names the workspace).
CREATE TABLE workspaces (
    name       TEXT PRIMARY KEY,
    mode       TEXT NOT NULL CHECK (mode IN ('isolated', 'shared')),
    created_at TEXT NOT NULL
);

-- The workspace a task mounted (a name or a host path).
ALTER TABLE tasks ADD COLUMN workspace TEXT;
