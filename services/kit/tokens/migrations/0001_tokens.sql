-- Bearer tokens an admin creates and revokes at run time, shared by every
-- service. Only the SHA-256 digest of a token is stored, never the token.
CREATE TABLE {schema}.tokens (
    id            uuid PRIMARY KEY,
    sha256        text NOT NULL UNIQUE CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    principal_id  text NOT NULL,
    role          text NOT NULL CHECK (role IN ('user', 'admin', 'service')),
    description   text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL,
    created_by    text NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    revoked_by    text,
    -- The CreateToken request_id, per creator: a retry finds the first token.
    request_id    text NOT NULL,
    request_hash  text NOT NULL,
    UNIQUE (created_by, request_id)
);

-- Lists run newest first, optionally for one principal.
CREATE INDEX tokens_created_idx ON {schema}.tokens (created_at DESC, id DESC);
CREATE INDEX tokens_principal_idx ON {schema}.tokens (principal_id, created_at DESC, id DESC);
