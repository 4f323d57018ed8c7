"""Watches Triton: health follows it (NOT_SERVING while it or a served model is down,
SERVING again once it recovers, without a restart), and its statistics feed metrics."""

from __future__ import annotations

import asyncio
import contextlib

from embedder import metrics
from embedder.adapters.triton_client import TritonClient, TritonError
from kit.embedding_models import ModelRegistry
from kit.grpc.server import RunningServer
from kit.logs import get_logger

log = get_logger(__name__)


class BackendMonitor:
    def __init__(
        self,
        client: TritonClient,
        registry: ModelRegistry,
        stats: metrics.TritonStatsCollector,
        *,
        poll_seconds: float,
    ) -> None:
        self._client = client
        self._registry = registry
        self._stats = stats
        self._poll_seconds = poll_seconds
        self.up: bool | None = None

    async def check(self, server: RunningServer) -> bool:
        """Probe every served model once; report the result through health and metrics."""
        ready = [await self._client.is_ready(model.triton_model) for model in self._registry]
        up = all(ready)
        if up != self.up:
            log.info("embedder.backend_" + ("up" if up else "down"), url=self._client.url)
            await server.set_serving(up)
            metrics.TRITON_UP.set(1 if up else 0)
            self.up = up
        if up:
            await self._poll_stats()
        return up

    async def run(self, server: RunningServer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.check(server)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_seconds)

    async def _poll_stats(self) -> None:
        for model in self._registry:
            try:
                stats = await self._client.model_stats(model.triton_model)
            except TritonError:
                continue  # a missed poll only delays the figures
            self._stats.stats[model.name] = {
                "queue_seconds": stats.queue_ns / 1e9,
                "compute_seconds": stats.compute_ns / 1e9,
                "inferences": float(stats.inference_count),
                "executions": float(stats.execution_count),
            }
