"""Run-time bearer tokens: one store in Postgres (schema ``auth``), shared by
every service, next to the file-configured tokens of ``kit.auth``.

``records`` is the pure part (what a token is, what a valid request is);
``store`` reads and writes the table; ``cache`` keeps each service's view of
the active tokens fresh (LISTEN/NOTIFY plus a periodic refresh).
"""

SCHEMA = "auth"
# NOTIFY'd in the transaction of every create and revoke; the payload is the token id.
CHANGE_CHANNEL = "vectorops_auth_tokens"
