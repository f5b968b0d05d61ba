-- Customer portal sessions (`billing_portal.session`, read-api/src/pages/portal.rs).
--
-- A portal session is an access grant, not a business fact: it lets whoever holds its URL
-- act for one customer of one project and mode for a short while. So it is a plain table,
-- as the dashboard's sessions are, and not an event: the log would keep a credential's
-- hash forever and every replica of the log would carry it; a table row is pruned when it
-- has expired. What a portal session *does* is in the log: every write it makes goes
-- through the same commands as the API, with `actor = portal:<bps_…>` in the events'
-- metadata, so the audit trail names the session (and this table its customer) while it
-- lasts. Stripe offers create only (no retrieve, no list), so nothing reads these rows
-- but the portal's own pages.
--
--   token_hash  SHA-256 of the random token in the URL (`/portal/<token>`); the token
--               itself is never stored
--   csrf_token  random per session, embedded in every portal form, checked on every POST
--   expires_at  created_at + the portal's session life (1 h by default)
CREATE TABLE billing_portal_sessions
(
    id          text        PRIMARY KEY,
    token_hash  bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    project     text        NOT NULL,
    livemode    boolean     NOT NULL,
    customer    text        NOT NULL,
    return_url  text,
    locale      text,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX billing_portal_sessions_expiry ON billing_portal_sessions (expires_at);
