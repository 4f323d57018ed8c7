"""``EmbedderService``: maps messages to the Embedder and back, nothing more."""

from __future__ import annotations

import grpc

from embedder.embedding import Embedder, Priority
from kit.embedding_models import ModelSpec, Pooling, Quantization
from kit.errors import FieldViolation, InvalidArgument
from kit.grpc.pagination import page
from vectorops.common.v1 import config_pb2
from vectorops.embedder.v1 import embedder_pb2, embedder_service_pb2, embedder_service_pb2_grpc

_POOLING = {
    Pooling.MEAN: embedder_pb2.POOLING_MEAN,
    Pooling.CLS: embedder_pb2.POOLING_CLS,
    Pooling.LAST_TOKEN: embedder_pb2.POOLING_LAST_TOKEN,
    Pooling.MAX: embedder_pb2.POOLING_MAX,
}
_QUANTIZATION = {
    Quantization.FLOAT32: config_pb2.QUANTIZATION_FLOAT32,
    Quantization.FLOAT16: config_pb2.QUANTIZATION_FLOAT16,
    Quantization.INT8: config_pb2.QUANTIZATION_INT8,
}


def model_info(model: ModelSpec) -> embedder_pb2.ModelInfo:
    return embedder_pb2.ModelInfo(
        name=model.name,
        dimension=model.dimension,
        max_tokens=model.max_tokens,
        pooling=_POOLING[model.pooling],
        normalized=model.normalized,
        query_instruction=model.query_instruction,
        document_instruction=model.document_instruction,
        supported_quantizations=[_QUANTIZATION[q] for q in model.quantizations],
        max_batch_size=model.max_batch_size,
        backend_model=model.triton_model,
    )


class EmbedderServicer(embedder_service_pb2_grpc.EmbedderServiceServicer):
    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    async def Embed(
        self, request: embedder_service_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedder_service_pb2.EmbedResponse:
        if not request.model:
            raise InvalidArgument(
                "model is required",
                reason="INVALID_ARGUMENT",
                metadata={"field": "model"},
                field_violations=[FieldViolation("model", "required")],
            )
        if request.input_kind == config_pb2.INPUT_KIND_UNSPECIFIED:
            raise InvalidArgument(
                "input_kind is required: INPUT_KIND_QUERY or INPUT_KIND_DOCUMENT",
                reason="INVALID_ARGUMENT",
                metadata={"field": "input_kind"},
                field_violations=[FieldViolation("input_kind", "QUERY or DOCUMENT")],
            )
        is_query = request.input_kind == config_pb2.INPUT_KIND_QUERY
        outcome = await self._embedder.embed(
            request.model,
            list(request.texts),
            is_query=is_query,
            instruction=request.instruction if request.HasField("instruction") else None,
            normalize=request.normalize if request.HasField("normalize") else None,
            fail_on_truncation=request.fail_on_truncation,
            deadline_s=context.time_remaining(),
            # A query is what a search waits for; documents are bulk work.
            priority=Priority.QUERY if is_query else Priority.BULK,
            path="grpc",
        )
        results = [embedder_pb2.EmbedResult() for _ in request.texts]
        for position, embedded in outcome.vectors.items():
            vector = results[position].vector
            vector.values.extend(embedded.vector.tolist())
            vector.token_count = embedded.tokens
            vector.truncated = embedded.truncated
        for failure in outcome.failures:
            results[failure.index].error.reason = failure.reason
            results[failure.index].error.message = failure.message
        return embedder_service_pb2.EmbedResponse(
            model=outcome.model.name, dimension=outcome.model.dimension, results=results
        )

    async def GetModelInfo(
        self, request: embedder_service_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> embedder_service_pb2.GetModelInfoResponse:
        return embedder_service_pb2.GetModelInfoResponse(
            model=model_info(self._embedder.registry.get(request.model))
        )

    async def ListModels(
        self, request: embedder_service_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> embedder_service_pb2.ListModelsResponse:
        models, next_token = page(
            list(self._embedder.registry), request.page_size, request.page_token
        )
        return embedder_service_pb2.ListModelsResponse(
            models=[model_info(m) for m in models], next_page_token=next_token
        )
