-- The first four checkpoints of a blue-green REINDEX on the indexer's side:
-- the staging collection it builds and what each live document became there.

-- One row per REINDEX that reached its staging step. The name is written
-- BEFORE the staging collection is created, so a crash in between leaves a
-- name that a resumed run reuses (creation is idempotent) and that a failure
-- or cancel can delete; never a collection nobody knows of.
CREATE TABLE {schema}.reindex_runs (
    operation_id        uuid PRIMARY KEY,
    collection_id       uuid NOT NULL,
    staging_collection  text NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    -- Set once the staging collection was deleted after a failure or cancel.
    staging_deleted_at  timestamptz
);

-- What reprocessing made of each live document, for this operation only: the
-- live rows in documents describe the live collection until the switch.
CREATE TABLE {schema}.reindex_documents (
    operation_id     uuid NOT NULL,
    document_id      uuid NOT NULL,
    source_id        uuid NOT NULL,
    path             text NOT NULL,
    content_hash     text NOT NULL,
    status           text NOT NULL CHECK (status IN ('INDEXED', 'DUPLICATE', 'FAILED')),
    chunk_count      integer NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    bytes            bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    failure_reason   text,
    failure_message  text,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operation_id, document_id)
);
