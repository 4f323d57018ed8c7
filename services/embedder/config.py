"""The embedder's settings (``VECTOROPS_EMBEDDER_*``), on top of the shared ones."""

from __future__ import annotations

from pydantic import Field

from kit.config import Settings


class EmbedderSettings(Settings):
    # An external Triton (host:port of its gRPC endpoint); unset → start our own.
    embedder_triton_url: str | None = None
    # The registry models this embedder serves (names or aliases), comma-separated.
    embedder_models: str = (
        "sentence-transformers/all-MiniLM-L6-v2,vectorops/hash-bow-384,vectorops/hash-bow-256"
    )
    # Request limits of Embed: beyond them the call is refused, not truncated.
    embedder_max_texts: int = Field(default=512, ge=1)
    embedder_max_request_chars: int = Field(default=4_000_000, ge=1)
    # Batches in flight to Triton at once, per priority. Queries have their own
    # slots so they never wait behind bulk indexing.
    # Batches in flight to Triton at once, per priority. Queries have their own
    # slots so they never wait behind bulk indexing.
    embedder_max_in_flight_bulk: int = Field(default=4, ge=1)
    embedder_max_in_flight_queries: int = Field(default=8, ge=1)
    # How long a query may wait for a free slot before RESOURCE_EXHAUSTED.
    embedder_query_queue_seconds: float = Field(default=2.0, gt=0)
    # A query Triton has not answered in this long is sent again (0: never).
    embedder_query_hedge_seconds: float = Field(default=0.05, ge=0)
    embedder_triton_timeout_seconds: float = Field(default=60.0, gt=0)
    embedder_health_poll_seconds: float = Field(default=2.0, gt=0)
    # Work-queue batches handled at once, and the ack wait that redelivers the
    # batch of an embedder that died (slow batches send in_progress before it).
    embedder_queue_concurrency: int = Field(default=4, ge=1)
    embedder_queue_ack_wait_seconds: float = Field(default=30.0, gt=0)
    embedder_triton_start_timeout_seconds: float = Field(default=300.0, gt=0)

    def model_names(self) -> list[str]:
        return [name.strip() for name in self.embedder_models.split(",") if name.strip()]
