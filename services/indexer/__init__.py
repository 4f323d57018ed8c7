"""The indexer: sources, documents, chunking, Qdrant collections, staging, aliases,
validation, cleanup and search."""
