-- examlink hub schema: resolving review items (#13's core; the reviewer role of #12).

ALTER TABLE review_queue
    ADD COLUMN resolved_by text,
    ADD COLUMN decision    text,
    ADD COLUMN value       text;
CREATE INDEX review_queue_pending_idx ON review_queue (queued_at) WHERE resolved_at IS NULL;

-- A reviewed record is a new revision; nothing is overwritten without its history.
ALTER TABLE records ADD COLUMN revision integer NOT NULL DEFAULT 1;
ALTER TABLE measurements
    ADD COLUMN reviewed_by text,
    ADD COLUMN reviewed_at timestamptz;

CREATE TABLE measurement_history (
    id          bigserial PRIMARY KEY,
    record_id   text NOT NULL,
    field       text NOT NULL,
    revision    integer NOT NULL,
    value       text,
    number      double precision,
    status      text NOT NULL,
    reason      text,
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX measurement_history_record_idx ON measurement_history (record_id, field);
