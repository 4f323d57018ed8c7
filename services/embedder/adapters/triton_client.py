"""The async Triton client the embedder embeds through (tritonclient, gRPC).

Every model of ``deploy/triton/model_repository`` takes ``TEXT`` (BYTES, one
text per row) and returns ``EMBEDDING`` (FP32, one vector per row) and ``TOKENS``
(INT32, the row's token count before the model truncates it). Triton's
errors are turned into three exceptions the application layer can act on:
``TritonUnavailable`` (retry later, report NOT_SERVING), ``TritonModelError``
(this batch failed: fail its chunks) and ``TritonTimeout`` (deadline spent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

logger = logging.getLogger(__name__)

INPUT = "TEXT"
OUTPUT = "EMBEDDING"
TOKENS = "TOKENS"

# Health probes must answer fast even when the server is gone.
_PROBE_TIMEOUT_S = 2.0
# Gone, not ready, or not (yet) loaded: nothing this batch did wrong.
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND", "StatusCode.CANCELLED"}
_DEADLINE = {"StatusCode.DEADLINE_EXCEEDED"}


class TritonError(Exception):
    """Base of the errors of a call to Triton."""


class TritonUnavailable(TritonError):
    """Triton is unreachable, not ready, or does not serve the model (now)."""


class TritonModelError(TritonError):
    """The model failed on this batch (or refused it); the message says why."""


class TritonTimeout(TritonError):
    """The call's deadline passed before Triton answered."""


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32, (n, dimension)
    tokens: np.ndarray  # int32, (n,): tokens of each input before truncation


@dataclass(frozen=True)
class ModelStats:
    """Cumulative inference statistics of one model since Triton started (all versions).

    ``queue_ns`` is time requests waited in the scheduler; the ``compute_*_ns``
    are time in the model (inputs in, forward pass, outputs out). Counts are of
    requests (``success``/``failure``/``inference`` = rows) and of model executions
    (``execution_count``: one per batch the dynamic batcher formed).
    """

    success_count: int = 0
    failure_count: int = 0
    inference_count: int = 0
    execution_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0

    @property
    def compute_ns(self) -> int:
        return self.compute_input_ns + self.compute_infer_ns + self.compute_output_ns


class TritonClient:
    """One gRPC channel to Triton at ``url`` (``host:port``), for asyncio callers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = grpcclient.InferenceServerClient(url)
        self._max_batch: dict[str, int] = {}

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self, model: str) -> bool:
        """Server live and ``model`` ready; False on any error (unknown model, no server)."""
        try:
            return bool(
                await self._client.is_server_live(client_timeout=_PROBE_TIMEOUT_S)
                and await self._client.is_model_ready(model, client_timeout=_PROBE_TIMEOUT_S)
            )
        except InferenceServerException as exc:
            logger.debug("triton at %s not ready for %s: %s", self.url, model, exc)
            return False

    async def embed(
        self,
        model: str,
        texts: Sequence[str],
        *,
        priority: int,
        timeout_s: float | None = None,
    ) -> Embeddings:
        """Vectors (float32, ``(len(texts), dimension)``) and token counts of ``texts``, in order.

        ``priority`` is the dynamic batcher's level (1 = queries, 2 = bulk).
        ``timeout_s`` bounds each request; it is also sent to Triton, so work whose
        caller gave up is dropped there. More texts than the model's
        ``max_batch_size`` go as several requests at once (Triton refuses larger
        ones), which its dynamic batcher runs back to back.
        """
        if not texts:
            raise ValueError("no texts to embed")
        # surrogatepass: a lone surrogate reaches the model, which refuses that one
        # request with a reason, instead of this call failing with a local error.
        data = [t.encode("utf-8", "surrogatepass") for t in texts]
        limit = await self._max_batch_size(model, timeout_s)
        chunks = [data[i : i + limit] for i in range(0, len(data), limit)]
        parts = await asyncio.gather(
            *(self._infer(model, chunk, priority, timeout_s) for chunk in chunks)
        )
        if len(parts) == 1:
            return parts[0]
        return Embeddings(
            np.concatenate([p.vectors for p in parts]), np.concatenate([p.tokens for p in parts])
        )

    async def _infer(
        self, model: str, data: list[bytes], priority: int, timeout_s: float | None
    ) -> Embeddings:
        array = np.array(data, dtype=np.object_).reshape(-1, 1)
        tensor = grpcclient.InferInput(INPUT, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        try:
            result = await self._client.infer(
                model,
                [tensor],
                outputs=[
                    grpcclient.InferRequestedOutput(OUTPUT),
                    grpcclient.InferRequestedOutput(TOKENS),
                ],
                priority=priority,
                # Triton's timeout is in microseconds; None means none.
                timeout=max(1, int(timeout_s * 1_000_000)) if timeout_s else None,
                client_timeout=timeout_s,
            )
        except InferenceServerException as exc:
            error = _translate(exc, model)
            if isinstance(error, TritonUnavailable):
                # It may come back reloaded with another config: ask again then.
                self._max_batch.pop(model, None)
            raise error from exc
        vectors = result.as_numpy(OUTPUT)
        tokens = result.as_numpy(TOKENS)
        if vectors is None or vectors.ndim != 2 or vectors.shape[0] != len(data):
            shape = None if vectors is None else vectors.shape
            raise TritonModelError(f"{model} returned {shape} for {len(data)} texts")
        if tokens is None or tokens.size != len(data):
            raise TritonModelError(f"{model} returned no {TOKENS} count per text")
        return Embeddings(
            np.ascontiguousarray(vectors, dtype=np.float32), tokens.reshape(-1).astype(np.int32)
        )

    async def _max_batch_size(self, model: str, timeout_s: float | None) -> int:
        """The model's max_batch_size from its config, asked once per model."""
        limit = self._max_batch.get(model)
        if limit is None:
            try:
                response = await self._client.get_model_config(
                    model, client_timeout=timeout_s or _PROBE_TIMEOUT_S
                )
            except InferenceServerException as exc:
                raise _translate(exc, model) from exc
            # 0 means the model does not batch: one text per request.
            limit = self._max_batch[model] = max(1, response.config.max_batch_size)
        return limit

    async def model_stats(self, model: str) -> ModelStats:
        """Cumulative queue and compute time and counts of ``model``."""
        try:
            response = await self._client.get_inference_statistics(
                model, client_timeout=_PROBE_TIMEOUT_S
            )
        except InferenceServerException as exc:
            raise _translate(exc, model) from exc
        return _sum_stats(response)


def _sum_stats(response: service_pb2.ModelStatisticsResponse) -> ModelStats:
    totals = dict.fromkeys(ModelStats.__dataclass_fields__, 0)
    for version in response.model_stats:
        stats = version.inference_stats
        totals["success_count"] += stats.success.count
        totals["failure_count"] += stats.fail.count
        totals["inference_count"] += version.inference_count
        totals["execution_count"] += version.execution_count
        totals["queue_ns"] += stats.queue.ns
        totals["compute_input_ns"] += stats.compute_input.ns
        totals["compute_infer_ns"] += stats.compute_infer.ns
        totals["compute_output_ns"] += stats.compute_output.ns
    return ModelStats(**totals)


def _translate(exc: InferenceServerException, model: str) -> TritonError:
    status = exc.status() or ""
    message = f"{model}: {exc.message() or exc}"
    # Triton rejects a request still queued past its own timeout as UNAVAILABLE,
    # "Request timeout expired": that is our deadline, not an outage.
    if status in _DEADLINE or "request timeout expired" in message.lower():
        return TritonTimeout(message)
    if status in _UNAVAILABLE:
        return TritonUnavailable(message)
    return TritonModelError(message)
