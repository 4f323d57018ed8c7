"""One module per noun; each ``register``s its sub-commands on the parser."""

from cli.commands import (
    audit,
    collections,
    operations,
    quota,
    reindex,
    search,
    sources,
    tokens,
)

NOUNS = (collections, sources, reindex, operations, search, audit, quota, tokens)
