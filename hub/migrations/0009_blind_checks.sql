-- Quality sampling: a share of the fields an agent read `ok` arrives with its crop
-- (Record.sample_crops, payload schema v2). Each is a blind check: a reviewer types what the
-- crop shows without seeing the read (/review/blind), and the answers give the production
-- estimate of the ok-but-wrong rate per template and field (/review/quality, /metrics).
-- A disagreement also sends the field to a person: its measurement becomes `invalid` and a
-- review_queue row is added (hub::quality).
CREATE TABLE blind_checks (
    record_id        text NOT NULL REFERENCES records (record_id) ON DELETE CASCADE,
    field            text NOT NULL,
    template         text NOT NULL,
    template_version integer NOT NULL,
    crop_png         bytea NOT NULL,
    -- What the system stored as ok (the normalised value).
    read_value       text NOT NULL,
    queued_at        timestamptz NOT NULL DEFAULT now(),
    answered_by      text,
    answered_at      timestamptz,
    -- The normalised answer; NULL with answered_at set: absent on the export.
    answer           text,
    agrees           boolean,
    PRIMARY KEY (record_id, field),
    CHECK ((answered_at IS NULL) = (agrees IS NULL) AND (answered_at IS NULL) = (answered_by IS NULL))
);
-- The blind-check page reads the oldest pending one.
CREATE INDEX blind_checks_pending_idx ON blind_checks (queued_at, record_id, field)
    WHERE answered_at IS NULL;
-- The estimate groups the answered ones by template and field.
CREATE INDEX blind_checks_answered_idx ON blind_checks (template, field)
    WHERE answered_at IS NOT NULL;
