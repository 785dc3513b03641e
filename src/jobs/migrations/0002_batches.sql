-- OpenAI's Batch API on jobs: uploaded files (stored in parts, so no file is ever held whole
-- in memory), batches and their lives, and the endpoint a batch job's documents are bodies of.
ALTER TABLE jobs ADD COLUMN endpoint TEXT;

CREATE TABLE files (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    -- upload: parts in file_parts; batch_output / batch_error: rendered from batch_id's job.
    kind TEXT NOT NULL,
    batch_id TEXT,
    -- 0 while an upload is being written; a file is listed and read only once complete.
    complete BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE file_parts (
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (file_id, seq)
);

CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    metadata TEXT,
    state TEXT NOT NULL,
    model TEXT,
    job_id TEXT,
    errors TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    -- A worker validating the input holds the batch until then (another takes over after).
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    in_progress_ms BIGINT,
    finalizing_ms BIGINT,
    completed_ms BIGINT,
    failed_ms BIGINT,
    expired_ms BIGINT,
    cancelling_ms BIGINT,
    cancelled_ms BIGINT
);

CREATE INDEX batches_by_state ON batches (state, created_ms);
CREATE INDEX batches_by_created ON batches (created_ms, id);
