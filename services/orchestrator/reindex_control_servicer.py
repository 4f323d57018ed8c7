"""``vectorops.orchestrator.v1.ReindexControlService``: maps CompleteReindex
to the reindex application and back, nothing more."""

from __future__ import annotations

import grpc
from google.protobuf import json_format

from kit.grpc.interceptors import current_principal
from orchestrator.domain.reindex import SwitchRequest
from orchestrator.messages import collection_message, timestamp
from orchestrator.reindex_app import ReindexApp
from vectorops.orchestrator.v1 import reindex_control_service_pb2 as api
from vectorops.orchestrator.v1 import reindex_control_service_pb2_grpc

Context = grpc.aio.ServicerContext


class ReindexControlServicer(reindex_control_service_pb2_grpc.ReindexControlServiceServicer):
    def __init__(self, app: ReindexApp) -> None:
        self._app = app

    async def CompleteReindex(
        self, request: api.CompleteReindexRequest, context: Context
    ) -> api.CompleteReindexResponse:
        validation = request.validation
        outcome = await self._app.complete(
            current_principal(),
            SwitchRequest(
                operation_id=request.operation_id,
                collection_id=request.collection_id,
                expected_generation=request.expected_generation,
                staging_collection=request.staging_collection,
                validation_passed=validation.passed,
                vector_count=request.vector_count,
                document_count=request.document_count,
                stored_bytes=request.stored_bytes,
                request_id=request.request_id,
                validation=json_format.MessageToDict(validation)
                if request.HasField("validation")
                else {},
            ),
        )
        switch = outcome.switch
        return api.CompleteReindexResponse(
            switched=True,
            replayed=outcome.replayed,
            collection=collection_message(outcome.collection),
            generation=switch.to_generation,
            physical_collection=switch.physical_collection,
            retired_collections=list(switch.retired_collections),
            cleanup_not_before=timestamp(switch.cleanup_not_before),
        )
