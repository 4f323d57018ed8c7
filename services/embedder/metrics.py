"""The embedder's Prometheus metrics. Labels are bounded: model names come from the
registry, paths and priorities are fixed sets, reasons are the documented ones."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from embedder.domain.inputs import InputFailure
from kit.embedding_models import ModelSpec

REQUESTS = Counter(
    "vectorops_embedder_requests_total",
    "Embed requests and work-queue batches handled, by path (grpc, queue).",
    ["model", "path"],
)
CHUNKS = Counter(
    "vectorops_embedder_chunks_total",
    "Inputs embedded or failed, by outcome (embedded, failed).",
    ["model", "outcome"],
)
TOKENS = Counter(
    "vectorops_embedder_tokens_total",
    "Tokens the model read (after truncation) for the inputs it embedded.",
    ["model"],
)
PRETOKENIZED = Counter(
    "vectorops_embedder_pretokenized_inputs_total",
    "Inputs sent to Triton as the caller's token ids (the indexer's chunks), not as "
    "text to tokenize again, by Triton model.",
    ["triton_model"],
)
TRUNCATED = Counter(
    "vectorops_embedder_truncated_inputs_total",
    "Inputs longer than the model reads, embedded from their beginning only.",
    ["model"],
)
INPUT_FAILURES = Counter(
    "vectorops_embedder_input_failures_total",
    "Inputs that failed alone, by reason (EMPTY_INPUT, INPUT_TOO_LONG, INFERENCE_FAILED).",
    ["model", "reason"],
)
REQUEST_SECONDS = Histogram(
    "vectorops_embedder_request_seconds",
    "Time to embed one request or work-queue batch, all its Triton batches included.",
    ["model", "path"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_SECONDS = Histogram(
    "vectorops_embedder_batch_seconds",
    "Round trip of one batch to Triton, by priority (query, bulk).",
    ["model", "priority"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUERY_HEDGES = Counter(
    "vectorops_embedder_query_hedges_total",
    "Queries sent to Triton a second time because the first copy was slow to answer.",
    ["model"],
)
IN_FLIGHT = Gauge(
    "vectorops_embedder_in_flight_batches",
    "Batches sent to Triton and not answered yet, by priority.",
    ["priority"],
)
TRITON_UP = Gauge(
    "vectorops_embedder_triton_up",
    "1 when Triton is live and every served model is ready, else 0.",
)


def observe_request(
    model: str,
    path: str,
    *,
    embedded: int,
    tokens_read: int,
    truncated: int,
    failures: Sequence[InputFailure],
    started: float,
) -> None:
    REQUESTS.labels(model, path).inc()
    REQUEST_SECONDS.labels(model, path).observe(time.perf_counter() - started)
    CHUNKS.labels(model, "embedded").inc(embedded)
    TOKENS.labels(model).inc(tokens_read)
    TRUNCATED.labels(model).inc(truncated)
    if failures:
        CHUNKS.labels(model, "failed").inc(len(failures))
        for failure in failures:
            INPUT_FAILURES.labels(model, failure.reason).inc()


class TritonStatsCollector(Collector):
    """Triton's own cumulative queue and compute times per model, as last polled,
    and the served models' info; read at scrape time."""

    def __init__(self, models: Iterable[ModelSpec]) -> None:
        self._models = list(models)
        self.stats: dict[str, dict[str, float]] = {}

    def collect(self):  # noqa: ANN201
        info = GaugeMetricFamily(
            "vectorops_embedder_model_info",
            "Models this embedder serves (value 1), with their dimension and Triton model.",
            labels=["model", "triton_model", "dimension", "max_tokens"],
        )
        for model in self._models:
            info.add_metric(
                [model.name, model.triton_model, str(model.dimension), str(model.max_tokens)], 1
            )
        yield info
        families = {
            key: CounterMetricFamily(
                f"vectorops_embedder_triton_{key}_seconds",
                f"Triton's cumulative {key} time of the model's inferences.",
                labels=["model"],
            )
            for key in ("queue", "compute")
        }
        inferences = CounterMetricFamily(
            "vectorops_embedder_triton_inferences",
            "Inputs Triton has run through the model.",
            labels=["model"],
        )
        executions = CounterMetricFamily(
            "vectorops_embedder_triton_executions",
            "Batches Triton has executed for the model (after dynamic batching).",
            labels=["model"],
        )
        for model, values in self.stats.items():
            for key, family in families.items():
                family.add_metric([model], values.get(f"{key}_seconds", 0.0))
            inferences.add_metric([model], values.get("inferences", 0.0))
            executions.add_metric([model], values.get("executions", 0.0))
        yield from families.values()
        yield inferences
        yield executions


def register_triton_stats(models: Iterable[ModelSpec]) -> TritonStatsCollector:
    collector = TritonStatsCollector(models)
    REGISTRY.register(collector)
    return collector
