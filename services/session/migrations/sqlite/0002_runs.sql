-- Agent runs (SQLite): one row per turn, queued or running, then terminal.
-- A run is owned by one replica through a lease (owner, lease_expires_at) that the owner
-- renews; an expired lease lets another replica close the run. At most one run per session is
-- running (the partial unique index), so two replicas can never both start one.

CREATE TABLE runs (
    id               BLOB    PRIMARY KEY NOT NULL,
    session_id       BLOB    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- queued | running | completed | failed | cancelled | interrupted
    status           TEXT    NOT NULL,
    -- The user message as sent; appended to the conversation when the run starts.
    content          TEXT    NOT NULL,
    model            TEXT,
    parent_id        BLOB,
    callback_url     TEXT,
    user_message_id  BLOB,
    owner            TEXT,
    lease_expires_at INTEGER,
    heartbeat_at     INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
);

CREATE UNIQUE INDEX runs_one_running_per_session ON runs (session_id) WHERE status = 'running';
CREATE INDEX runs_queued ON runs (session_id, created_at) WHERE status = 'queued';
CREATE INDEX runs_lease ON runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX runs_owner ON runs (owner) WHERE status = 'running';
