-- Blind double keying (#13): the entries reviewers typed for a double-keyed field, one per
-- reviewer, before the item is resolved. Two that agree resolve it; a mismatch waits for a
-- third reviewer, whose entry decides by majority (no majority: escalated).
CREATE TABLE review_entries (
    record_id   text NOT NULL,
    field       text NOT NULL,
    reviewer    text NOT NULL,
    value       text,
    entered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (record_id, field, reviewer),
    FOREIGN KEY (record_id, field) REFERENCES review_queue (record_id, field) ON DELETE CASCADE
);

-- The review station's queue order (review::PRIORITY, then queue time), so a page with
-- thousands of items queued reads its one item from the index instead of sorting them all.
CREATE INDEX review_queue_priority_idx ON review_queue ((CASE
    WHEN field IN ('patient_id', 'eye', 'exam_date') THEN 0
    WHEN field ~ '(^|_)(k1|k2|km|kmax|al|acd|cct|iop|iopc|apex_pachy|thinnest_pachy|lt)$' THEN 1
    ELSE 2 END), queued_at, record_id, field) WHERE resolved_at IS NULL;
