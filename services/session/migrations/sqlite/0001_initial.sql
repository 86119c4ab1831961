-- Sessions, messages and the per-session event log (SQLite).
-- Ids are 16-byte UUID blobs; times are microseconds since the Unix epoch (UTC), so that they
-- sort and compare exactly; JSON columns hold text.

CREATE TABLE sessions (
    id            BLOB    PRIMARY KEY NOT NULL,
    title         TEXT,
    thread_id     TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    agent_name    TEXT    NOT NULL,
    metadata      TEXT    NOT NULL DEFAULT '{}',
    config        TEXT    NOT NULL DEFAULT '{}',
    scopes        TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);

-- Stable list order: newest first, id as tie breaker (cursor paging).
CREATE INDEX sessions_created_at_id ON sessions (created_at DESC, id DESC);

CREATE TABLE messages (
    id           BLOB    PRIMARY KEY NOT NULL,
    session_id   BLOB    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- 1, 2, … within the session: the conversation order.
    position     INTEGER NOT NULL,
    role         TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    tool_calls   TEXT    NOT NULL DEFAULT '[]',
    tool_call_id TEXT,
    token_count  INTEGER,
    model_used   TEXT,
    parent_id    BLOB,
    created_at   INTEGER NOT NULL,
    UNIQUE (session_id, position)
);

CREATE TABLE events (
    session_id BLOB    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- 1, 2, … within the session, assigned by the store on append.
    seq        INTEGER NOT NULL,
    run_id     BLOB,
    type       TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
