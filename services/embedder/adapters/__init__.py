"""The embedder's adapters: Triton Inference Server (the process and its gRPC client)."""
