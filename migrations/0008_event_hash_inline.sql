-- The insert trigger computes each event's hash inline instead of calling
-- calmony_event_hash: the same bytes (see 0001 and event-store/src/chain.rs; `calmony ledger
-- verify` and the ledger tests recompute them), but a plpgsql expression is evaluated in
-- place while a call to a SQL function sets up an executor per row. Measured on 21,000
-- appends to existing streams: 65-69 µs per event before, 50-54 µs after.
-- calmony_event_hash stays, for anyone recomputing a hash in SQL.
CREATE OR REPLACE FUNCTION calmony_events_before_insert() RETURNS trigger
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
    NEW.hash := sha256(
        previous
        || int8send(NEW.sequence)
        || int8send(NEW.position)
        || int8send((extract(epoch FROM NEW.recorded_at) * 1000000)::bigint)
        || convert_to(NEW.aggregate_type, 'UTF8') || '\x00'::bytea
        || convert_to(NEW.aggregate_id, 'UTF8') || '\x00'::bytea
        || convert_to(NEW.event_type, 'UTF8') || '\x00'::bytea
        || convert_to(NEW.event_version, 'UTF8') || '\x00'::bytea
        || convert_to(NEW.payload::text, 'UTF8') || '\x00'::bytea
        || convert_to(NEW.metadata::text, 'UTF8'));
    PERFORM pg_notify('calmony_events', '');
    RETURN NEW;
END
$$;
