"""The async Triton client the embedder embeds through (tritonclient, gRPC).

Every model of ``deploy/triton/model_repository`` takes ``TEXT`` (BYTES, one
text per row) and returns ``EMBEDDING`` (FP32, one vector per row) and ``TOKENS``
(INT32, the row's token count before the model truncates it). A model whose
config declares ``INPUT_IDS`` also takes rows of token ids instead (see
``model_inputs``): rows given with their ids go that way, the rest as text. Triton's
errors are turned into three exceptions the application layer can act on:
``TritonUnavailable`` (retry later, report NOT_SERVING), ``TritonModelError``
(this batch failed: fail its chunks) and ``TritonTimeout`` (deadline spent).

An inference request is never cancelled: Triton 2.51 (the nvidia-pytriton
wheel's) may crash with SIGSEGV when a gRPC request is cancelled, or passes its
client deadline, just as it completes (triton-inference-server/server#7368,
fixed in 2.53). A caller that gives up, or whose deadline passes, abandons the
request instead; it runs to its end and its answer is dropped. Triton itself
rejects a request still queued past the deadline sent with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, service_pb2
from tritonclient.utils import InferenceServerException

from embedder import metrics
from embedder.adapters.model_inputs import INPUT_IDS, pack_id_rows
from kit.grpc.client import RECONNECT_OPTIONS

logger = logging.getLogger(__name__)
T = TypeVar("T")

INPUT = "TEXT"
OUTPUT = "EMBEDDING"
TOKENS = "TOKENS"

# Health probes must answer fast even when the server is gone.
_PROBE_TIMEOUT_S = 2.0
# Gone, not ready, or not (yet) loaded: nothing this batch did wrong.
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND", "StatusCode.CANCELLED"}
_DEADLINE = {"StatusCode.DEADLINE_EXCEEDED"}
# gRPC's own deadline on an inference request: this long after the caller's, when
# Triton is stuck rather than busy, so the channel does not hold the call forever.
_STUCK_AFTER_S = 30.0
# How long ``close`` waits for requests in flight: closing the channel cancels them.
_DRAIN_S = 5.0
# tritonclient's message limits, and a restarted Triton found again within a second.
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    *RECONNECT_OPTIONS,
]


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


@dataclass(frozen=True)
class _ModelShape:
    max_batch_size: int
    takes_ids: bool  # the config declares INPUT_IDS


class TritonClient:
    """One gRPC channel to Triton at ``url`` (``host:port``), for asyncio callers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = grpcclient.InferenceServerClient(url, channel_args=_CHANNEL_OPTIONS)
        self._shapes: dict[str, _ModelShape] = {}
        self._requests: set[asyncio.Future[Any]] = set()

    @property
    def in_flight(self) -> int:
        """Inference requests sent and not answered yet, abandoned ones included."""
        return len(self._requests)

    async def close(self) -> None:
        """Close the channel once the requests in flight have ended (at most ``_DRAIN_S``)."""
        if self._requests:
            await asyncio.wait(set(self._requests), timeout=_DRAIN_S)
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
        token_ids: Sequence[Sequence[int]] | None = None,
        priority: int,
        timeout_s: float | None = None,
    ) -> Embeddings:
        """Vectors (float32, ``(len(texts), dimension)``) and token counts of ``texts``, in order.

        ``token_ids``: per text, the model's token ids of it without special tokens,
        or an empty sequence; a model that takes ``INPUT_IDS`` gets those instead of
        the text (the others ignore them). ``priority`` is the dynamic batcher's
        level (1 = queries, 2 = bulk). ``timeout_s`` bounds each request; it is also
        sent to Triton, so work whose caller gave up is dropped there. More rows than
        the model's ``max_batch_size`` go as several requests at once (Triton
        refuses larger ones), which its dynamic batcher runs back to back.
        """
        if not texts:
            raise ValueError("no texts to embed")
        if token_ids is not None and len(token_ids) != len(texts):
            raise ValueError(f"{len(token_ids)} token id rows for {len(texts)} texts")
        shape = await self._shape(model, timeout_s)
        ids = token_ids if shape.takes_ids and token_ids is not None else [()] * len(texts)
        limit = shape.max_batch_size
        ids_rows = [i for i, row in enumerate(ids) if len(row)]
        text_rows = [i for i, row in enumerate(ids) if not len(row)]
        requests = [
            *((rows, _ids_input([ids[i] for i in rows])) for rows in _slices(ids_rows, limit)),
            *((rows, _text_input([texts[i] for i in rows])) for rows in _slices(text_rows, limit)),
        ]
        if ids_rows:
            metrics.PRETOKENIZED.labels(model).inc(len(ids_rows))
        parts = await asyncio.gather(
            *(
                self._infer(model, tensor, len(rows), priority, timeout_s)
                for rows, tensor in requests
            )
        )
        if len(parts) == 1:
            return parts[0]  # one request: its rows are in order
        # Put each request's rows back at the positions they came from.
        positions = np.concatenate([rows for rows, _ in requests])
        vectors = np.empty((len(texts), parts[0].vectors.shape[1]), dtype=np.float32)
        tokens = np.empty(len(texts), dtype=np.int32)
        vectors[positions] = np.concatenate([p.vectors for p in parts])
        tokens[positions] = np.concatenate([p.tokens for p in parts])
        return Embeddings(vectors, tokens)

    async def _infer(
        self,
        model: str,
        tensor: grpcclient.InferInput,
        rows: int,
        priority: int,
        timeout_s: float | None,
    ) -> Embeddings:
        request = self._run_to_end(
            self._client.infer(
                model,
                [tensor],
                outputs=[
                    grpcclient.InferRequestedOutput(OUTPUT),
                    grpcclient.InferRequestedOutput(TOKENS),
                ],
                priority=priority,
                # Triton's timeout is in microseconds; None means none.
                timeout=max(1, int(timeout_s * 1_000_000)) if timeout_s else None,
                client_timeout=timeout_s + _STUCK_AFTER_S if timeout_s else None,
            )
        )
        try:
            # shield: the caller's cancellation or deadline abandons the request.
            result = await asyncio.wait_for(asyncio.shield(request), timeout_s)
        except TimeoutError:
            raise TritonTimeout(f"{model}: no answer in {timeout_s} s") from None
        except InferenceServerException as exc:
            error = _translate(exc, model)
            if isinstance(error, TritonUnavailable):
                # It may come back reloaded with another config: ask again then.
                self._shapes.pop(model, None)
            raise error from exc
        vectors = result.as_numpy(OUTPUT)
        tokens = result.as_numpy(TOKENS)
        if vectors is None or vectors.ndim != 2 or vectors.shape[0] != rows:
            shape = None if vectors is None else vectors.shape
            raise TritonModelError(f"{model} returned {shape} for {rows} rows")
        if tokens is None or tokens.size != rows:
            raise TritonModelError(f"{model} returned no {TOKENS} count per row")
        return Embeddings(
            np.ascontiguousarray(vectors, dtype=np.float32), tokens.reshape(-1).astype(np.int32)
        )

    def _run_to_end(self, call: Awaitable[T]) -> asyncio.Future[T]:
        """``call`` as a task that runs to its end whoever stops waiting for it."""
        request = asyncio.ensure_future(call)
        self._requests.add(request)
        request.add_done_callback(self._ended)
        return request

    def _ended(self, request: asyncio.Future[Any]) -> None:
        self._requests.discard(request)
        if not request.cancelled():
            request.exception()  # an abandoned request's error is nobody's: not logged

    async def _shape(self, model: str, timeout_s: float | None) -> _ModelShape:
        """The model's max_batch_size and whether it takes ids, from its config, asked
        once per model."""
        shape = self._shapes.get(model)
        if shape is None:
            try:
                response = await self._client.get_model_config(
                    model, client_timeout=timeout_s or _PROBE_TIMEOUT_S
                )
            except InferenceServerException as exc:
                raise _translate(exc, model) from exc
            config = response.config
            shape = self._shapes[model] = _ModelShape(
                # 0 means the model does not batch: one row per request.
                max_batch_size=max(1, config.max_batch_size),
                takes_ids=any(tensor.name == INPUT_IDS for tensor in config.input),
            )
        return shape

    async def model_stats(self, model: str) -> ModelStats:
        """Cumulative queue and compute time and counts of ``model``."""
        try:
            response = await self._client.get_inference_statistics(
                model, client_timeout=_PROBE_TIMEOUT_S
            )
        except InferenceServerException as exc:
            raise _translate(exc, model) from exc
        return _sum_stats(response)


def _slices(rows: list[int], size: int) -> list[list[int]]:
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def _text_input(texts: Sequence[str]) -> grpcclient.InferInput:
    # surrogatepass: a lone surrogate reaches the model, which refuses that one
    # request with a reason, instead of this call failing with a local error.
    data = [t.encode("utf-8", "surrogatepass") for t in texts]
    array = np.array(data, dtype=np.object_).reshape(-1, 1)
    tensor = grpcclient.InferInput(INPUT, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def _ids_input(rows: Sequence[Sequence[int]]) -> grpcclient.InferInput:
    array = pack_id_rows(rows)
    tensor = grpcclient.InferInput(INPUT_IDS, list(array.shape), "INT64")
    tensor.set_data_from_numpy(array)
    return tensor


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
