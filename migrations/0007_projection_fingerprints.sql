-- What each projection's tables were built by: a fingerprint of its name, version, schema
-- and indexes (projections::runtime). A projection whose code no longer matches what built
-- its tables (or that predates fingerprints: NULL) is rebuilt from the log before it
-- follows again.
ALTER TABLE projection_checkpoints ADD COLUMN schema_fingerprint text;
