-- The operations this indexer runs: what a redelivered command needs to resume
-- (the steps already done, with the checkpoint and the exact event announced),
-- and the operations cancelled, so a command that arrives after its cancel is
-- dropped.

-- One row per operation this indexer has started. The collection's figures
-- before the first step make the usage delta the same however many times the
-- command is delivered; the outcome, once published, ends any redelivery.
CREATE TABLE {schema}.operation_runs (
    operation_id      uuid PRIMARY KEY,
    collection_id     uuid NOT NULL,
    operation_type    text NOT NULL,
    documents_before  bigint NOT NULL,
    vectors_before    bigint NOT NULL,
    bytes_before      bigint NOT NULL,
    outcome           text CHECK (outcome IN ('COMPLETED', 'FAILED', 'CANCELLED')),
    started_at        timestamptz NOT NULL DEFAULT now(),
    ended_at          timestamptz
);

-- A completed step: its checkpoint (what later steps read) and the serialised
-- StepCompleted payload, announced again verbatim after a redelivery so the
-- orchestrator never sees two different checkpoints for one step.
CREATE TABLE {schema}.operation_steps (
    operation_id     uuid NOT NULL,
    step             text NOT NULL,
    step_index       integer NOT NULL CHECK (step_index >= 1),
    checkpoint       jsonb NOT NULL,
    step_completed   bytea NOT NULL,
    completed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operation_id, step)
);

-- Cancels heard on vo.evt.ctl.cancel (every instance hears every cancel).
CREATE TABLE {schema}.cancelled_operations (
    operation_id   uuid PRIMARY KEY,
    collection_id  uuid,
    reason         text NOT NULL DEFAULT '',
    cancelled_at   timestamptz NOT NULL DEFAULT now()
);
