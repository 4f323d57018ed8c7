-- The append-only audit log, hash-chained (see audit/domain/chain.py).
CREATE TABLE {schema}.audit_events (
    sequence bigint PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    action text NOT NULL,
    outcome text NOT NULL,
    principal text NOT NULL,
    role text NOT NULL,
    owner_id text NOT NULL,
    collection_id text NOT NULL,
    operation_id text NOT NULL,
    service text NOT NULL,
    request_id text NOT NULL,
    trace_id text NOT NULL,
    details jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    content_hash text NOT NULL,
    previous_hash text NOT NULL
);

CREATE INDEX audit_events_owner ON {schema}.audit_events (owner_id, sequence);
CREATE INDEX audit_events_collection ON {schema}.audit_events (collection_id, sequence);
CREATE INDEX audit_events_operation ON {schema}.audit_events (operation_id, sequence);
CREATE INDEX audit_events_occurred ON {schema}.audit_events (occurred_at);

-- The head of the chain, one row: appends lock it, so they are serialised and
-- every row links to the one before it.
CREATE TABLE {schema}.audit_chain_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    last_sequence bigint NOT NULL,
    last_hash text NOT NULL
);
INSERT INTO {schema}.audit_chain_head (id, last_sequence, last_hash)
VALUES (1, 0, repeat('0', 64));

-- Rows cannot be quietly edited or removed through ordinary SQL; it takes
-- disabling the trigger, which VerifyChain then exposes.
CREATE FUNCTION {schema}.audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON {schema}.audit_events
    FOR EACH ROW EXECUTE FUNCTION {schema}.audit_events_refuse_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON {schema}.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.audit_events_refuse_change();
