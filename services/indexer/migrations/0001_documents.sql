-- The indexer's own state. It never reads the orchestrator's tables: it keeps a
-- copy of each collection and source as the commands it receives describe them,
-- one row per document of a source, and the batches it has already applied.

CREATE TABLE {schema}.collections (
    collection_id        uuid PRIMARY KEY,
    owner_id             text NOT NULL,
    alias_name           text NOT NULL,
    physical_collection  text NOT NULL,
    staging_collection   text,
    -- Commands may arrive late or twice: only a higher generation replaces a row.
    generation           bigint NOT NULL,
    -- embedding_model, dimension, quantization, instruction, chunk_size, chunk_overlap
    config               jsonb NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.sources (
    source_id      uuid PRIMARY KEY,
    collection_id  uuid NOT NULL REFERENCES {schema}.collections (collection_id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('directory', 'upload')),
    path           text NOT NULL,
    include        jsonb NOT NULL DEFAULT '[]'::jsonb,
    exclude        jsonb NOT NULL DEFAULT '[]'::jsonb,
    status         text NOT NULL DEFAULT 'ACTIVE'
                   CHECK (status IN ('ACTIVE', 'REMOVING', 'REMOVED')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Target of the documents' composite key: a document's source must belong
    -- to the document's own collection.
    CONSTRAINT sources_collection_source_key UNIQUE (collection_id, source_id)
);

-- document_id is UUIDv5 of (collection, source, path), so the unique key and
-- the primary key name the same row; both are kept so a wrong id fails loudly.
CREATE TABLE {schema}.documents (
    document_id        uuid PRIMARY KEY,
    collection_id      uuid NOT NULL,
    source_id          uuid NOT NULL,
    path               text NOT NULL,
    content_hash       text NOT NULL,
    media_type         text NOT NULL DEFAULT '',
    status             text NOT NULL
                       CHECK (status IN ('INDEXED', 'FAILED', 'SKIPPED_UNCHANGED', 'DUPLICATE')),
    failure_reason     text,
    failure_message    text,
    chunk_count        integer NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    vector_count       bigint NOT NULL DEFAULT 0 CHECK (vector_count >= 0),
    bytes              bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    -- The original's row may go with its source; the duplicate then stands alone.
    duplicate_of       uuid REFERENCES {schema}.documents (document_id) ON DELETE SET NULL,
    last_operation_id  uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT documents_source_fkey FOREIGN KEY (collection_id, source_id)
        REFERENCES {schema}.sources (collection_id, source_id) ON DELETE CASCADE,
    -- Its index is also the (collection_id, source_id) index (a leading prefix)
    -- and the order of keyset pages, (source_id, path) within a collection.
    CONSTRAINT documents_collection_source_path_key UNIQUE (collection_id, source_id, path)
);

CREATE INDEX documents_collection_hash_idx ON {schema}.documents (collection_id, content_hash);
-- ON DELETE SET NULL looks duplicates up by their original.
CREATE INDEX documents_duplicate_of_idx ON {schema}.documents (duplicate_of)
    WHERE duplicate_of IS NOT NULL;

-- One row per applied batch or command step: a redelivered message finds its
-- row here and changes nothing.
CREATE TABLE {schema}.processed_batches (
    operation_id  uuid NOT NULL,
    batch_id      text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operation_id, batch_id)
);
