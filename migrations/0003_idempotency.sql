-- Idempotency keys (STRIPE-CONVENTIONS.md §1.3): the first response to a key is stored
-- and replayed to every retry with the same key. See commands/src/idempotency.rs.
--
-- A row is born `in_flight` when a request claims its key, holding a lease
-- (`locked_until`); it becomes `completed` in the same transaction as the command's
-- events (or on its own for responses that wrote nothing, e.g. a decline or a 500).
--   fingerprint  sha256 of method, path and canonical parameters: a retry with other
--                parameters is refused (400 idempotency_error)
--   generation   1 for the first claimant, +1 each time a retry takes over a claim whose
--                lease ran out (its owner crashed)
--   claim_id     random per claim: every write by a claimant compares it, so an owner
--                whose claim was taken over (or pruned) can no longer complete it
--   created_at   when the key was first claimed: records are pruned from 24 h after it
CREATE TABLE idempotency_keys
(
    project         text        NOT NULL,
    mode            text        NOT NULL CHECK (mode IN ('test', 'live')),
    idempotency_key text        NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     bytea       NOT NULL CHECK (octet_length(fingerprint) = 32),
    state           text        NOT NULL DEFAULT 'in_flight' CHECK (state IN ('in_flight', 'completed')),
    generation      bigint      NOT NULL DEFAULT 1 CHECK (generation >= 1),
    claim_id        uuid        NOT NULL,
    locked_until    timestamptz,
    response_status smallint    CHECK (response_status BETWEEN 100 AND 599),
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (project, mode, idempotency_key),
    CHECK (CASE state
               WHEN 'in_flight' THEN locked_until IS NOT NULL AND response_status IS NULL
                   AND response_body IS NULL AND completed_at IS NULL
               WHEN 'completed' THEN locked_until IS NULL AND response_status IS NOT NULL
                   AND response_body IS NOT NULL AND completed_at IS NOT NULL
           END)
)
-- Every row is updated once or twice (claim, takeover, completion) without touching an
-- indexed column: room on the page lets those be HOT updates, with no index churn.
WITH (fillfactor = 80);

-- Pruning walks the oldest records first.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
