"""The embedded stack's shared vector store: Qdrant's gRPC API over Qdrant's engine.

In production several indexer replicas share a Qdrant server or cluster. In the
embedded stack the engine (qdrant-edge, through ``EdgeVectorStore``) runs inside
one process that owns its data dir, so this small process owns it for everyone:
``python -m vectorstore --data-dir D --port P`` serves the part of Qdrant's own
gRPC API (``qdrant_client.grpc``) that ``QdrantServerStore`` calls, and indexers
reach it with ``VECTOROPS_INDEXER_QDRANT_URL=http://host:P``. Every other RPC
answers UNIMPLEMENTED and says so.
"""
