-- examlink hub schema: nothing lost on day one (#11).

-- Every template version the hub has seen, kept for ever: a record is checked against the exact
-- version it was read with, so old and new agents coexist during a rollout.
CREATE TABLE template_versions (
    template_id   text NOT NULL,
    version       integer NOT NULL,
    device_type   text NOT NULL,
    firmware      text NOT NULL,
    body          text NOT NULL,
    body_sha256   text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, version)
);

-- Records the hub could not take yet (answered `deferred`; the agent keeps them and sends them
-- again). A row goes when its record is stored.
CREATE TABLE deferrals (
    record_id     text PRIMARY KEY,
    device_id     text NOT NULL,
    code          text NOT NULL,
    reason        text NOT NULL,
    payload_size  integer NOT NULL,
    first_at      timestamptz NOT NULL,
    last_at       timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 1
);
CREATE INDEX deferrals_device_idx ON deferrals (device_id);

-- A device clock far off is recorded, never refused; a re-read of the same export under a new
-- template version is a revision linked to the record it supersedes.
ALTER TABLE records
    ADD COLUMN clock_suspect boolean NOT NULL DEFAULT false,
    ADD COLUMN supersedes    text,
    ADD COLUMN superseded_by text;
CREATE INDEX records_image_idx ON records (device_id, image_sha256);

-- Rejects are kept whole and can be replayed (`hub rejects replay`).
ALTER TABLE rejects
    ADD COLUMN replayed_at    timestamptz,
    ADD COLUMN replay_outcome text;
CREATE INDEX rejects_code_idx ON rejects (code, received_at);
