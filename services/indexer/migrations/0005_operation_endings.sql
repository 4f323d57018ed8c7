-- How an operation ended, recorded BEFORE the event that announces it: the
-- exact event (announced again verbatim) and the collection's figures after it
-- (the usage it reports). A command delivered again once an outcome is
-- recorded runs no step: it finishes announcing that outcome. Until then a
-- redelivery could run the operation's steps again after its failure was
-- announced (a REINDEX building a staging collection nobody would delete).
-- ``outcome`` is now set here; ``ended_at`` once the announcing is done.
ALTER TABLE {schema}.operation_runs
    ADD COLUMN ending           bytea,
    ADD COLUMN documents_after  bigint,
    ADD COLUMN vectors_after    bigint,
    ADD COLUMN bytes_after      bigint;
