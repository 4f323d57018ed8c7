"""The indexer's domain: sources, documents, chunking. Pure logic, no I/O
(except the directory walk in ``sources``, which must stat the tree)."""
