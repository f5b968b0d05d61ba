-- The event store: one append-only table for every stream.
--
-- The first seven columns are postgres-es 0.5's schema, kept as they are so that its
-- PostgresEventRepository still reads (and can write) this table. The rest are ours:
--   position     global position, assigned at insert (NOT commit) order; may have gaps
--   txid         the writing transaction (xid8); the log is read in (txid, position) order
--                and only below the oldest running transaction, so it never skips a
--                late-committing writer (see event-store/src/log.rs)
--   recorded_at  when the row was written
--   prev_hash    hash of the previous event of the same stream (zeros for the first)
--   hash         sha256 over prev_hash and this row's content (the per-stream chain)
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 1) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    position       bigint GENERATED ALWAYS AS IDENTITY,
    txid           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at    timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    prev_hash      bytea                        NOT NULL DEFAULT '\x',
    hash           bytea                        NOT NULL DEFAULT '\x',
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_log_order ON events (txid, position);

-- postgres-es's snapshot table, kept for compatibility; we do not snapshot yet.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- The hash of one event: sha256 of
--   prev_hash (32 bytes) || int8 sequence || int8 position || int8 recorded_at (unix microseconds)
--   || aggregate_type || 0x00 || aggregate_id || 0x00 || event_type || 0x00 || event_version
--   || 0x00 || payload text || 0x00 || metadata text
-- Integers are big-endian (int8send). Text never contains NUL, so 0x00 separates unambiguously.
-- event-store/src/chain.rs computes the same bytes; `calmony ledger verify` recomputes every
-- hash in Rust, so a tamperer cannot hide behind a replaced SQL function.
CREATE FUNCTION calmony_event_hash(
    prev bytea, agg_type text, agg_id text, seq bigint, pos bigint, at timestamptz,
    ev_type text, ev_version text, body json, meta json) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT AS
$$
SELECT sha256(
    prev
    || int8send(seq)
    || int8send(pos)
    || int8send((extract(epoch FROM at) * 1000000)::bigint)
    || convert_to(agg_type, 'UTF8') || '\x00'::bytea
    || convert_to(agg_id, 'UTF8') || '\x00'::bytea
    || convert_to(ev_type, 'UTF8') || '\x00'::bytea
    || convert_to(ev_version, 'UTF8') || '\x00'::bytea
    || convert_to(body::text, 'UTF8') || '\x00'::bytea
    || convert_to(meta::text, 'UTF8'))
$$;

-- Every insert, whoever makes it: version continuity, the hash chain, and a wake-up for
-- live subscribers (delivered at commit; many inserts in one transaction fold into one).
CREATE FUNCTION calmony_events_before_insert() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    previous bytea;
BEGIN
    IF NEW.sequence = 1 THEN
        previous := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    ELSE
        SELECT hash INTO previous FROM events
        WHERE aggregate_type = NEW.aggregate_type
          AND aggregate_id = NEW.aggregate_id
          AND sequence = NEW.sequence - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'stream %/% has no version %: versions must increase by one',
                NEW.aggregate_type, NEW.aggregate_id, NEW.sequence - 1
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    NEW.txid := pg_current_xact_id();
    NEW.recorded_at := date_trunc('microseconds', clock_timestamp());
    NEW.prev_hash := previous;
    NEW.hash := calmony_event_hash(previous, NEW.aggregate_type, NEW.aggregate_id, NEW.sequence,
        NEW.position, NEW.recorded_at, NEW.event_type, NEW.event_version, NEW.payload, NEW.metadata);
    PERFORM pg_notify('calmony_events', '');
    RETURN NEW;
END
$$;

CREATE TRIGGER events_before_insert
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION calmony_events_before_insert();

-- Append-only: the database itself refuses to change history.
CREATE FUNCTION calmony_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'the % table is append-only: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_refuse_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION calmony_refuse_change();

CREATE TRIGGER events_refuse_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION calmony_refuse_change();

-- Seals: tamper evidence for the global log without serialising writers. Each seal covers
-- the events after the previous seal's end cursor up to its own, in log order, and chains:
--   hash = sha256(previous seal hash || hash of each event in the range, in log order)
CREATE TABLE ledger_seals
(
    seal_number   bigint      PRIMARY KEY CHECK (seal_number >= 1),
    from_txid     xid8        NOT NULL,
    from_position bigint      NOT NULL,
    to_txid       xid8        NOT NULL,
    to_position   bigint      NOT NULL,
    event_count   bigint      NOT NULL CHECK (event_count >= 1),
    prev_hash     bytea       NOT NULL,
    hash          bytea       NOT NULL,
    sealed_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER ledger_seals_refuse_update_delete
    BEFORE UPDATE OR DELETE ON ledger_seals
    FOR EACH ROW EXECUTE FUNCTION calmony_refuse_change();

CREATE TRIGGER ledger_seals_refuse_truncate
    BEFORE TRUNCATE ON ledger_seals
    FOR EACH STATEMENT EXECUTE FUNCTION calmony_refuse_change();

-- Projection checkpoints: the last event (in log order) whose effect is committed.
CREATE TABLE projection_checkpoints
(
    name        text        PRIMARY KEY,
    txid        xid8        NOT NULL DEFAULT '0',
    position    bigint      NOT NULL DEFAULT 0,
    events      bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
