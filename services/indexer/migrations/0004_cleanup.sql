-- The end of a blue-green REINDEX on the indexer's side: the switch it asked
-- the orchestrator for, and the deletion of the physical collections the
-- switch retired.

-- One row per REINDEX that reached its switch, written BEFORE CompleteReindex
-- is called: whoever applies the switch (the switch step, or the
-- CollectionSwitched consumer when this process died between the call and the
-- alias move) finds the new config here. The orchestrator's answer is added
-- once received, so a resumed switch step switches nothing twice and needs no
-- second call.
CREATE TABLE {schema}.reindex_switches (
    operation_id         uuid PRIMARY KEY,
    collection_id        uuid NOT NULL,
    staging_collection   text NOT NULL,
    from_generation      bigint NOT NULL,
    -- The target config (the keys of collections.config).
    config               jsonb NOT NULL,
    requested_at         timestamptz NOT NULL DEFAULT now(),
    -- CompleteReindex's answer.
    generation           bigint,
    retired_collections  text[],
    cleanup_not_before   timestamptz,
    answered_at          timestamptz
);

-- A retired physical collection to delete once due, after the safety checks.
-- A too-young staging collection stays PENDING with a later not_before.
CREATE TABLE {schema}.cleanup_jobs (
    operation_id     uuid NOT NULL,
    collection_name  text NOT NULL,
    collection_id    uuid NOT NULL,
    owner_id         text NOT NULL DEFAULT '',
    not_before       timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'PENDING'
                     CHECK (status IN ('PENDING', 'DELETED', 'GONE', 'SKIPPED')),
    -- The latest decision (kit.cleanup_rules.CleanupReason) and each safety
    -- check's result behind it.
    reason           text,
    checks           jsonb NOT NULL DEFAULT '{}'::jsonb,
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    checked_at       timestamptz,
    finished_at      timestamptz,
    PRIMARY KEY (operation_id, collection_name)
);

-- The loop looks only at what is still to do, oldest due first.
CREATE INDEX cleanup_jobs_due_idx ON {schema}.cleanup_jobs (not_before) WHERE status = 'PENDING';
