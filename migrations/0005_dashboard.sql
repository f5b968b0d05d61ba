-- The admin dashboard's sign-in state (read-api/src/dashboard/). Sessions and failed
-- attempts are not business facts, so they are plain tables, not events; nothing else
-- reads them.

-- A signed-in operator. The cookie holds a random token; only its SHA-256 is stored, so a
-- copy of this table signs nobody in.
--   csrf_token  random per session, embedded in every dashboard form and checked on
--               every POST
--   expires_at  12 h after sign-in, however active the session
CREATE TABLE dashboard_sessions
(
    token_hash  bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    operator_id text        NOT NULL,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);

-- Failed sign-ins, one row each, by what they are limited by: `email:<normalized email>`
-- and `ip:<address>`. Rows older than the window are pruned as new failures arrive. In
-- the database rather than in memory so that every API process counts the same failures.
CREATE TABLE dashboard_login_failures
(
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject   text        NOT NULL CHECK (char_length(subject) <= 300),
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dashboard_login_failures_by_subject ON dashboard_login_failures (subject, failed_at);
