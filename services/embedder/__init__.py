"""The embedder: embedding models served by Triton Inference Server, over gRPC and the
JetStream embed work queue."""
