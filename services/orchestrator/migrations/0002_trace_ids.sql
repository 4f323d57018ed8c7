-- The trace id of the request that started each operation: every later outbox
-- row of the operation (commands, step audits, the switch), written by
-- whichever consumer moves it on, carries it, so one grep of the logs follows
-- the operation across the services. '' for operations started before it.
ALTER TABLE {schema}.operations ADD COLUMN trace_id text NOT NULL DEFAULT '';
