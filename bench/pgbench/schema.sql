-- A hand-written Postgres job queue: the ceiling that any job system on this Postgres works under.
CREATE TABLE queue (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued',
    payload jsonb NOT NULL,
    result jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX queue_claim ON queue (id) WHERE status = 'queued';
CREATE TABLE blobs (id bigserial PRIMARY KEY, data bytea NOT NULL);
