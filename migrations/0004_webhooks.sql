-- The webhook relay (webhook-relay crate, README "Webhooks"). Not a read model: these
-- tables hold durable work, so they are never rebuilt. The relay's fan-out consumer
-- (checkpoint `webhook_relay` in projection_checkpoints) writes endpoints, events and new
-- deliveries in the same transaction as its checkpoint; delivery workers lease deliveries,
-- send them, and record every attempt.
--
-- Times are the relay's clock (injectable, so retry schedules are tested by moving it),
-- except leases, which are the database's: they guard against crashed processes in real
-- time.

-- The relay's copy of each endpoint, folded from the endpoint's events, with what the API
-- read model must never hold: the signing secret.
CREATE TABLE webhook_endpoints
(
    id              text        PRIMARY KEY,
    project         text        NOT NULL,
    livemode        boolean     NOT NULL,
    url             text        NOT NULL,
    enabled_events  text[]      NOT NULL,
    -- whsec_…, as given to the owner once: deliveries are signed with it, so it cannot be
    -- kept only as a hash. Never logged.
    secret          text        NOT NULL CHECK (secret LIKE 'whsec\_%'),
    status          text        NOT NULL CHECK (status IN ('enabled', 'disabled')),
    deleted         boolean     NOT NULL DEFAULT false,
    -- the last 2xx, and the first failure since then: three days of failures and no
    -- success disable the endpoint
    last_success_at timestamptz,
    failing_since   timestamptz
);

CREATE INDEX webhook_endpoints_scope ON webhook_endpoints (project, livemode);

-- Every Stripe event sent to at least one endpoint, with the exact body each attempt sends
-- (the API read model's event with `pending_webhooks` set to the endpoints it went to).
CREATE TABLE webhook_events
(
    id       text    PRIMARY KEY,
    project  text    NOT NULL,
    livemode boolean NOT NULL,
    type     text    NOT NULL,
    body     text    NOT NULL
);

-- One event to one endpoint, retried on its schedule until a 2xx, the end of its window
-- (`failed`), or its endpoint's disabling or deletion (`canceled`). The fan-out makes one
-- per event and matching endpoint; `POST /v1/events/{id}/redeliver` adds more.
CREATE TABLE webhook_deliveries
(
    id              text        PRIMARY KEY,
    event_id        text        NOT NULL REFERENCES webhook_events (id),
    endpoint_id     text        NOT NULL REFERENCES webhook_endpoints (id),
    project         text        NOT NULL,
    livemode        boolean     NOT NULL,
    redelivery      boolean     NOT NULL DEFAULT false,
    state           text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'succeeded', 'failed', 'canceled')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at      timestamptz NOT NULL,
    next_attempt_at timestamptz,
    last_attempt_at timestamptz,
    finished_at     timestamptz,
    -- the relay sending it now, until when (database time): one attempt at a time, and a
    -- crashed relay's delivery is taken over once its lease runs out
    lease_id        uuid,
    leased_until    timestamptz,
    CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((state = 'pending') = (finished_at IS NULL))
);

-- The fan-out makes at most one delivery per event and endpoint (and finds an event's).
CREATE UNIQUE INDEX webhook_deliveries_fan_out ON webhook_deliveries (event_id, endpoint_id)
    WHERE NOT redelivery;
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint
    ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);

-- Every HTTP attempt, as it went. A relay whose lease ran out mid-attempt still records
-- what it sent, so an attempt number may appear twice.
CREATE TABLE webhook_attempts
(
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      text        NOT NULL REFERENCES webhook_deliveries (id),
    attempt          integer     NOT NULL CHECK (attempt >= 1),
    attempted_at     timestamptz NOT NULL,
    succeeded        boolean     NOT NULL,
    status_code      integer     CHECK (status_code BETWEEN 100 AND 999),
    latency_ms       integer     NOT NULL CHECK (latency_ms >= 0),
    -- why it failed without a status (timeout, connection refused, refused address)
    error            text,
    -- the start of the response body, for the owner's debugging
    response_excerpt text
);

CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
