"""Adapters of the indexer: libraries and models behind the domain's small protocols."""
