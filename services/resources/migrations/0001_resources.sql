-- Quotas per owner. A limit named in `overridden` is set for this owner (NULL there
-- means unlimited); a limit not named follows the configured default.
CREATE TABLE {schema}.quotas (
    owner_id text PRIMARY KEY,
    max_collections bigint,
    max_vectors bigint,
    max_stored_bytes bigint,
    max_documents_per_operation bigint,
    max_concurrent_operations bigint,
    overridden text[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per owner; also the row Reserve locks to serialise admissions of an owner.
CREATE TABLE {schema}.usage (
    owner_id text PRIMARY KEY,
    collections bigint NOT NULL DEFAULT 0,
    vectors bigint NOT NULL DEFAULT 0,
    stored_bytes bigint NOT NULL DEFAULT 0,
    documents bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {schema}.collection_usage (
    owner_id text NOT NULL,
    collection_id text NOT NULL,
    vectors bigint NOT NULL DEFAULT 0,
    stored_bytes bigint NOT NULL DEFAULT 0,
    documents bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, collection_id)
);

CREATE TABLE {schema}.reservations (
    operation_id text PRIMARY KEY,
    owner_id text NOT NULL,
    collection_id text NOT NULL DEFAULT '',
    operation_type integer NOT NULL DEFAULT 0,
    vectors bigint NOT NULL CHECK (vectors >= 0),
    bytes bigint NOT NULL CHECK (bytes >= 0),
    documents bigint NOT NULL CHECK (documents >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    released_at timestamptz
);

-- The live reservations of an owner, summed by every admission.
CREATE INDEX reservations_live ON {schema}.reservations (owner_id, expires_at)
    WHERE released_at IS NULL;

-- Usage events already applied: a redelivered event changes nothing.
CREATE TABLE {schema}.processed_usage_events (
    event_id text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
