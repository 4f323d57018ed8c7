"""A vector store that times every call it passes on: the latency panels and
alerts of the Qdrant behind the indexer, whichever backend it is."""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

from indexer.adapters.vector_store import VectorStore
from indexer.metrics import VECTOR_STORE_SECONDS


class MeteredVectorStore:
    """Wraps a ``VectorStore``; each coroutine method is observed under its own name
    (a fixed set: the protocol's methods), ``ok`` or ``error``."""

    def __init__(self, inner: VectorStore, backend: str) -> None:
        self._inner = inner
        self._backend = backend

    @property
    def inner(self) -> VectorStore:
        """The store it times."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            outcome = "error"
            try:
                result = await attribute(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                VECTOR_STORE_SECONDS.labels(self._backend, name, outcome).observe(
                    time.perf_counter() - started
                )

        setattr(self, name, timed)  # built once per method, not once per call
        return timed
