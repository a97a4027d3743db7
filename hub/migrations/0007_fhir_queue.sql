-- FHIR push (#16): the durable queue of exports whose FHIR resources are still to be sent to
-- [fhir] push_url. A row is added in the same transaction as the record (and again whenever a
-- review makes a new revision), so nothing is lost while the FHIR server is down; the push
-- stage deletes it once every resource was accepted. `seq` changes on every re-queue, so a
-- revision that arrives while the previous one is being sent is not lost by that delete.
-- With no push_url the rows stay (one small row per record); TRUNCATE fhir_queue is safe.
CREATE SEQUENCE fhir_queue_seq;
CREATE TABLE fhir_queue (
    record_id        text PRIMARY KEY REFERENCES records (record_id) ON DELETE CASCADE,
    seq              bigint NOT NULL DEFAULT nextval('fhir_queue_seq'),
    enqueued_at      timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text
);
CREATE INDEX fhir_queue_due_idx ON fhir_queue (next_attempt_at);

-- New records: one statement-level trigger per INSERT (the load stage inserts a batch at once).
CREATE FUNCTION fhir_enqueue_new() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO fhir_queue (record_id) SELECT record_id FROM new_records
    ON CONFLICT (record_id) DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER records_fhir_enqueue_new AFTER INSERT ON records
    REFERENCING NEW TABLE AS new_records
    FOR EACH STATEMENT EXECUTE FUNCTION fhir_enqueue_new();

-- A new revision (a review decision): queue it again, due now.
CREATE FUNCTION fhir_enqueue_revision() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO fhir_queue (record_id) VALUES (NEW.record_id)
    ON CONFLICT (record_id) DO UPDATE SET seq = nextval('fhir_queue_seq'), enqueued_at = now(),
        attempts = 0, next_attempt_at = now(), last_error = NULL;
    RETURN NULL;
END;
$$;
CREATE TRIGGER records_fhir_enqueue_revision AFTER UPDATE OF revision ON records
    FOR EACH ROW WHEN (NEW.revision IS DISTINCT FROM OLD.revision)
    EXECUTE FUNCTION fhir_enqueue_revision();

-- What was stored before this migration is sent too, once a push_url is set.
INSERT INTO fhir_queue (record_id) SELECT record_id FROM records WHERE superseded_by IS NULL;
