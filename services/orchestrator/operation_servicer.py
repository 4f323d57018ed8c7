"""``vectorops.orchestrator.v1.OperationService``: maps messages to the
operation application and back, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from kit.grpc.interceptors import current_principal
from orchestrator.domain.fields import require
from orchestrator.messages import (
    operation_message,
    operation_status_from,
    operation_type_from,
    optional_time,
)
from orchestrator.operation_app import OperationApp
from vectorops.orchestrator.v1 import operation_service_pb2 as api
from vectorops.orchestrator.v1 import operation_service_pb2_grpc

Context = grpc.aio.ServicerContext


class OperationServicer(operation_service_pb2_grpc.OperationServiceServicer):
    def __init__(self, app: OperationApp) -> None:
        self._app = app

    async def GetOperation(
        self, request: api.GetOperationRequest, context: Context
    ) -> api.GetOperationResponse:
        op = await self._app.get(current_principal(), request.operation_id)
        return api.GetOperationResponse(operation=operation_message(op))

    async def ListOperations(
        self, request: api.ListOperationsRequest, context: Context
    ) -> api.ListOperationsResponse:
        types = [operation_type_from(value) for value in request.types]
        statuses = [operation_status_from(value) for value in request.statuses]
        page, token = await self._app.list(
            current_principal(),
            request.page_size,
            request.page_token,
            collection_id=request.collection_id,
            types=[kind for kind in types if kind is not None],
            statuses=[status for status in statuses if status is not None],
            created_after=optional_time(request, "create_time_after"),
            created_before=optional_time(request, "create_time_before"),
        )
        return api.ListOperationsResponse(
            operations=[operation_message(op) for op in page], next_page_token=token
        )

    async def WatchOperation(
        self, request: api.WatchOperationRequest, context: Context
    ) -> AsyncIterator[api.WatchOperationResponse]:
        async for op in self._app.watch(current_principal(), request.operation_id):
            yield api.WatchOperationResponse(operation=operation_message(op))

    async def CancelOperation(
        self, request: api.CancelOperationRequest, context: Context
    ) -> api.CancelOperationResponse:
        # Cancelling is idempotent by nature (a repeat changes and sends
        # nothing), so the key needs no storing; it is still required, as on
        # every mutating request.
        require(request.request_id, "request_id")
        op = await self._app.cancel(current_principal(), request.operation_id, request.reason)
        return api.CancelOperationResponse(operation=operation_message(op))
