-- Sessions, messages and the per-session event log (PostgreSQL).

CREATE TABLE sessions (
    id             UUID        PRIMARY KEY,
    title          TEXT,
    thread_id      TEXT        NOT NULL,
    status         TEXT        NOT NULL,
    agent_name     TEXT        NOT NULL,
    metadata       JSONB       NOT NULL DEFAULT '{}',
    config         JSONB       NOT NULL DEFAULT '{}',
    scopes         JSONB       NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    message_count  BIGINT      NOT NULL DEFAULT 0,
    -- Highest event seq handed out; bumped under the row lock by every event append.
    last_event_seq BIGINT      NOT NULL DEFAULT 0
);

-- Stable list order: newest first, id as tie breaker (cursor paging).
CREATE INDEX sessions_created_at_id ON sessions (created_at DESC, id DESC);
-- Scope and metadata predicates use containment (`@>`).
CREATE INDEX sessions_scopes ON sessions USING GIN (scopes jsonb_path_ops);
CREATE INDEX sessions_metadata ON sessions USING GIN (metadata jsonb_path_ops);

CREATE TABLE messages (
    id           UUID        PRIMARY KEY,
    session_id   UUID        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- 1, 2, … within the session: the conversation order.
    position     BIGINT      NOT NULL,
    role         TEXT        NOT NULL,
    content      TEXT        NOT NULL,
    tool_calls   JSONB       NOT NULL DEFAULT '[]',
    tool_call_id TEXT,
    token_count  BIGINT,
    model_used   TEXT,
    parent_id    UUID,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (session_id, position)
);

CREATE TABLE events (
    session_id UUID        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- 1, 2, … within the session, assigned by the store on append.
    seq        BIGINT      NOT NULL,
    run_id     UUID,
    type       TEXT        NOT NULL,
    data       JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, seq)
);
