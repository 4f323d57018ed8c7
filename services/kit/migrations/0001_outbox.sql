-- The transactional outbox: an event row is written in the same transaction as
-- the state change it announces, and a dispatcher publishes it afterwards.
CREATE TABLE {schema}.outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    subject       text NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text
);

-- The dispatcher scans only what is still to be sent.
CREATE INDEX outbox_unpublished_idx ON {schema}.outbox (id) WHERE published_at IS NULL;
