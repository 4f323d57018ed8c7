-- The orchestrator's state: collections, their sources, operations and the
-- idempotency keys that make every creating request retry-safe.

CREATE TABLE {schema}.collections (
    id                        uuid PRIMARY KEY,
    owner_id                  text NOT NULL,
    name                      text NOT NULL,
    description               text NOT NULL DEFAULT '',
    -- Public Qdrant alias, derived from the id so it never changes or collides.
    alias_name                text NOT NULL UNIQUE,
    physical_collection       text NOT NULL,
    staging_collection        text,
    generation                bigint NOT NULL DEFAULT 1,
    -- embedding_model, dimension, quantization, instruction, chunk_size, chunk_overlap
    config                    jsonb NOT NULL,
    status                    text NOT NULL CHECK (status IN (
        'PENDING', 'READY', 'PROCESSING', 'DEGRADED', 'PARTIALLY_READY', 'ERROR', 'DELETING')),
    status_message            text NOT NULL DEFAULT '',
    document_count            bigint NOT NULL DEFAULT 0,
    vector_count              bigint NOT NULL DEFAULT 0,
    stored_bytes              bigint NOT NULL DEFAULT 0,
    active_operation_id       uuid,
    -- Physical collections replaced by a switch, waiting for delayed cleanup.
    old_physical_collections  jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    -- A completed DELETE removes the row, so every row present holds its name.
    CONSTRAINT collections_owner_name_key UNIQUE (owner_id, name)
);

-- Keyset pagination of one owner's collections.
CREATE INDEX collections_owner_page_idx ON {schema}.collections (owner_id, created_at, id);

CREATE TABLE {schema}.sources (
    id             uuid PRIMARY KEY,
    collection_id  uuid NOT NULL REFERENCES {schema}.collections (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('directory', 'upload')),
    path           text NOT NULL,
    include        jsonb NOT NULL DEFAULT '[]'::jsonb,
    exclude        jsonb NOT NULL DEFAULT '[]'::jsonb,
    status         text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'REMOVING', 'REMOVED')),
    document_count bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL
);

CREATE UNIQUE INDEX sources_unique_live_idx
    ON {schema}.sources (collection_id, kind, path) WHERE status <> 'REMOVED';

-- No foreign key to collections: a DELETE operation outlives its collection's
-- row and must stay readable (clients poll it to COMPLETED).
CREATE TABLE {schema}.operations (
    id                        uuid PRIMARY KEY,
    collection_id             uuid NOT NULL,
    owner_id                  text NOT NULL,
    type                      text NOT NULL CHECK (type IN (
        'INDEX', 'APPEND', 'REMOVE_SOURCE', 'REINDEX', 'DELETE')),
    status                    text NOT NULL CHECK (status IN (
        'PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    current_step              text,
    checkpoints               jsonb NOT NULL DEFAULT '{}'::jsonb,
    progress                  jsonb NOT NULL DEFAULT '{}'::jsonb,
    error_type                text,
    error_message             text,
    error_step                text,
    config                    jsonb NOT NULL DEFAULT '{}'::jsonb,
    previous_config           jsonb,
    source_id                 uuid,
    collection_status_before  text,
    changed_anything          boolean NOT NULL DEFAULT false,
    request_id                text NOT NULL DEFAULT '',
    created_by                text NOT NULL DEFAULT '',
    created_at                timestamptz NOT NULL,
    started_at                timestamptz,
    updated_at                timestamptz NOT NULL,
    ended_at                  timestamptz,
    wall_seconds              double precision NOT NULL DEFAULT 0,
    cpu_seconds               double precision NOT NULL DEFAULT 0,
    peak_memory_bytes         bigint NOT NULL DEFAULT 0,
    documents                 bigint NOT NULL DEFAULT 0,
    vectors                   bigint NOT NULL DEFAULT 0,
    bytes                     bigint NOT NULL DEFAULT 0,
    result                    jsonb
);

CREATE INDEX operations_collection_idx ON {schema}.operations (collection_id, created_at DESC);
CREATE INDEX operations_owner_page_idx ON {schema}.operations (owner_id, created_at DESC, id DESC);
-- The reaper and resume-on-start scan only what is still running.
CREATE INDEX operations_active_idx ON {schema}.operations (status, updated_at)
    WHERE status IN ('PENDING', 'PROCESSING');

-- One row per (owner, request_id): a retry finds the first result here.
-- operation_id/collection_id are filled in by the same transaction that
-- claimed the key, so a committed key always names its result.
CREATE TABLE {schema}.idempotency_keys (
    owner_id       text NOT NULL,
    request_id     text NOT NULL,
    request_hash   text NOT NULL,
    operation_id   uuid,
    collection_id  uuid,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (owner_id, request_id)
);
