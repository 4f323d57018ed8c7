-- A reservation whose operation has ended but whose room stays held (a completed
-- REINDEX until cleanup deletes the collection it retired) no longer counts as a
-- running operation.
ALTER TABLE {schema}.reservations ADD COLUMN operation_ended_at timestamptz;
