-- Revisions on the live results topic (#13): a review decision makes a new revision of a
-- record, and subscribers of examlink/v1/results/# get the record again, as it stands now,
-- with its revision number. The queue is durable like fhir_queue: a row is added in the
-- decision's own statement (trigger), and the republish stage deletes it only after the
-- broker acknowledged the publish (PUBACK). `seq` changes on every re-queue, so a revision
-- made while the previous one is in flight is published too. One row per record: a
-- subscriber always ends with the newest revision, and each publish carries the revision it
-- shows.
CREATE SEQUENCE republish_queue_seq;
CREATE TABLE republish_queue (
    record_id    text PRIMARY KEY REFERENCES records (record_id) ON DELETE CASCADE,
    seq          bigint NOT NULL DEFAULT nextval('republish_queue_seq'),
    enqueued_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION republish_enqueue_revision() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO republish_queue (record_id) VALUES (NEW.record_id)
    ON CONFLICT (record_id) DO UPDATE SET seq = nextval('republish_queue_seq'), enqueued_at = now();
    RETURN NULL;
END;
$$;
CREATE TRIGGER records_republish_revision AFTER UPDATE OF revision ON records
    FOR EACH ROW WHEN (NEW.revision > OLD.revision)
    EXECUTE FUNCTION republish_enqueue_revision();
