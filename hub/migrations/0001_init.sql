-- examlink hub schema v1. Applied once, inside the configured schema (search_path).

CREATE TABLE devices (
    device_id      text PRIMARY KEY,
    device_type    text NOT NULL,
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz,
    revoked_at     timestamptz,
    last_seen_at   timestamptz,
    online         boolean NOT NULL DEFAULT false,
    agent_version  text,
    backlog        bigint,
    exports        bigint,
    delivered      bigint,
    rejected       bigint,
    last_error     text,
    status_at      timestamptz
);

CREATE TABLE records (
    record_id        text PRIMARY KEY,
    device_id        text NOT NULL,
    device_type      text NOT NULL,
    template         text NOT NULL,
    template_version integer NOT NULL,
    firmware         text NOT NULL,
    patient_id       text,
    exam_date        date,
    exam_time        text,
    source_file      text NOT NULL,
    image_sha256     text NOT NULL,
    model_version    text NOT NULL,
    agent_version    text NOT NULL,
    captured_at      timestamptz NOT NULL,
    recognized_at    timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT now(),
    review_count     integer NOT NULL,
    payload          jsonb NOT NULL
);
CREATE INDEX records_patient_idx ON records (patient_id, captured_at);
CREATE INDEX records_device_idx ON records (device_id, captured_at);
CREATE INDEX records_captured_idx ON records (captured_at);

CREATE TABLE measurements (
    record_id   text NOT NULL REFERENCES records (record_id) ON DELETE CASCADE,
    field       text NOT NULL,
    value       text,
    number      double precision,
    unit        text,
    status      text NOT NULL,
    confidence  real NOT NULL,
    reason      text,
    PRIMARY KEY (record_id, field)
);

CREATE TABLE review_queue (
    record_id   text NOT NULL REFERENCES records (record_id) ON DELETE CASCADE,
    field       text NOT NULL,
    status      text NOT NULL,
    raw         text,
    reason      text,
    crop_png    bytea,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    PRIMARY KEY (record_id, field)
);

CREATE TABLE rejects (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL,
    device_id     text,
    record_id     text,
    topic         text NOT NULL,
    code          text NOT NULL,
    reason        text NOT NULL,
    payload_size  integer NOT NULL,
    payload       bytea NOT NULL
);
CREATE INDEX rejects_device_idx ON rejects (device_id, received_at);

CREATE TABLE device_rejections (
    id               bigserial PRIMARY KEY,
    device_id        text NOT NULL,
    source_file      text NOT NULL,
    file_sha256      text NOT NULL,
    code             text NOT NULL,
    reason           text NOT NULL,
    quarantined_as   text NOT NULL,
    at               timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, file_sha256, at)
);
