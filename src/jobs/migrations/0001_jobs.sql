-- Jobs and their documents. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Times are milliseconds since the Unix epoch; JSON is stored as text.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    total BIGINT NOT NULL,
    succeeded BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    external BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT
);

CREATE INDEX jobs_by_state ON jobs (state, created_ms, id);

CREATE TABLE documents (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq BIGINT NOT NULL,
    custom_id TEXT NOT NULL,
    input TEXT NOT NULL,
    params TEXT,
    state TEXT NOT NULL,
    result TEXT,
    error TEXT,
    published BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    PRIMARY KEY (job_id, custom_id)
);

CREATE UNIQUE INDEX documents_by_seq ON documents (job_id, seq);
CREATE INDEX documents_by_state ON documents (state, published, created_ms);
CREATE INDEX documents_by_finish ON documents (job_id, finished_ms);
