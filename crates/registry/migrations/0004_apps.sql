-- Apps and their releases. A release is immutable: nothing ever updates a release row or its
-- layers (the triggers refuse it); deleting the app deletes its releases.
CREATE TABLE apps (
    name       TEXT PRIMARY KEY,
    image      TEXT NOT NULL,             -- canonical OCI image reference
    expose     TEXT NOT NULL,             -- JSON [PortSpec]
    command    TEXT NOT NULL,             -- JSON [string]; empty: the image's command
    created_at TEXT NOT NULL
);

CREATE TABLE releases (
    app             TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    number          INTEGER NOT NULL,     -- 1, 2, 3... per app
    label           TEXT,
    image           TEXT NOT NULL,        -- canonical reference at publish time
    manifest_digest TEXT NOT NULL,        -- what that reference pointed at
    config          TEXT NOT NULL,        -- JSON ReleaseConfig
    created_at      TEXT NOT NULL,
    PRIMARY KEY (app, number)
);

CREATE TABLE release_layers (
    app        TEXT NOT NULL,
    number     INTEGER NOT NULL,
    position   INTEGER NOT NULL,          -- 0 = bottom
    digest     TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    PRIMARY KEY (app, number, position),
    FOREIGN KEY (app, number) REFERENCES releases (app, number) ON DELETE CASCADE
);
CREATE INDEX release_layers_digest ON release_layers (digest);

CREATE TRIGGER releases_are_immutable BEFORE UPDATE ON releases
BEGIN
    SELECT RAISE(ABORT, 'releases are immutable');
END;

CREATE TRIGGER release_layers_are_immutable BEFORE UPDATE ON release_layers
BEGIN
    SELECT RAISE(ABORT, 'releases are immutable');
END;
