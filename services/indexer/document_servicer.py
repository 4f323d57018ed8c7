"""``DocumentService``: the documents of a collection the caller may read, from the
indexer's document repository, mapped to messages.

Stored outcomes map to the API's statuses: INDEXED and SKIPPED_UNCHANGED (its
points from an earlier operation stand) are COMPLETED; FAILED and DUPLICATE are
themselves. PENDING and PROCESSING are never stored (a document gets its row
when its outcome is known), so filtering on them alone lists nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import grpc
from google.protobuf import timestamp_pb2

from indexer.access import readable_collection
from indexer.adapters.document_repository import DocumentRecord, DocumentRepository
from indexer.adapters.document_repository import DocumentStatus as Stored
from indexer.domain.fields import invalid_field, require
from kit.grpc.interceptors import current_principal
from kit.sanitise import sanitise
from vectorops.indexer.v1 import document_service_pb2, document_service_pb2_grpc, indexer_pb2

DEFAULT_PAGE_SIZE = 100  # the API's default; the repository caps the maximum

_API_STATUS = {
    Stored.INDEXED: indexer_pb2.DOCUMENT_STATUS_COMPLETED,
    Stored.SKIPPED_UNCHANGED: indexer_pb2.DOCUMENT_STATUS_COMPLETED,
    Stored.FAILED: indexer_pb2.DOCUMENT_STATUS_FAILED,
    Stored.DUPLICATE: indexer_pb2.DOCUMENT_STATUS_DUPLICATE,
}
_STORED_STATUSES = {
    indexer_pb2.DOCUMENT_STATUS_PENDING: (),
    indexer_pb2.DOCUMENT_STATUS_PROCESSING: (),
    indexer_pb2.DOCUMENT_STATUS_COMPLETED: (Stored.INDEXED, Stored.SKIPPED_UNCHANGED),
    indexer_pb2.DOCUMENT_STATUS_FAILED: (Stored.FAILED,),
    indexer_pb2.DOCUMENT_STATUS_DUPLICATE: (Stored.DUPLICATE,),
}


class DocumentServicer(document_service_pb2_grpc.DocumentServiceServicer):
    def __init__(self, repository: DocumentRepository) -> None:
        self._repository = repository

    async def GetDocument(
        self, request: document_service_pb2.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> document_service_pb2.GetDocumentResponse:
        require(collection_id=request.collection_id, document_id=request.document_id)
        await readable_collection(self._repository, current_principal(), request.collection_id)
        document = await self._repository.get_document(request.collection_id, request.document_id)
        return document_service_pb2.GetDocumentResponse(document=document_message(document))

    async def ListDocuments(
        self, request: document_service_pb2.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> document_service_pb2.ListDocumentsResponse:
        require(collection_id=request.collection_id)
        if request.page_size < 0:
            raise invalid_field("page_size", "must not be negative")
        if request.source_id and not _is_uuid(request.source_id):
            raise invalid_field("source_id", "must be a source id (a UUID)")
        statuses = _stored_statuses(request.statuses)
        await readable_collection(self._repository, current_principal(), request.collection_id)
        if request.statuses and not statuses:
            return document_service_pb2.ListDocumentsResponse()  # only never-stored statuses
        documents, next_token = await self._repository.list_documents(
            request.collection_id,
            request.page_size or DEFAULT_PAGE_SIZE,
            request.page_token,
            statuses=statuses,
            source_id=request.source_id or None,
        )
        return document_service_pb2.ListDocumentsResponse(
            documents=[document_message(d) for d in documents], next_page_token=next_token
        )


def document_message(document: DocumentRecord) -> indexer_pb2.Document:
    return indexer_pb2.Document(
        id=document.document_id,
        collection_id=document.collection_id,
        source_id=document.source_id,
        path=document.path,
        media_type=document.media_type,
        size_bytes=document.bytes,
        content_sha256=document.content_hash,
        status=_API_STATUS[document.status],
        failure_reason=_failure_reason(document),
        chunk_count=document.chunk_count,
        last_operation_id=document.last_operation_id or "",
        create_time=_timestamp(document.created_at),
        update_time=_timestamp(document.updated_at),
    )


def _failure_reason(document: DocumentRecord) -> str:
    if document.status is Stored.FAILED:
        parts = [document.failure_reason or "FAILED", document.failure_message or ""]
        return sanitise(": ".join(part for part in parts if part))
    if document.status is Stored.DUPLICATE:
        original = document.duplicate_of
        return f"duplicate of document {original}" if original else "duplicate of a document"
    return ""


def _stored_statuses(requested: list[int]) -> set[Stored]:
    if indexer_pb2.DOCUMENT_STATUS_UNSPECIFIED in requested:
        raise invalid_field("statuses", "must not contain DOCUMENT_STATUS_UNSPECIFIED")
    unknown = [value for value in requested if value not in _STORED_STATUSES]
    if unknown:
        raise invalid_field("statuses", f"holds an unknown document status {unknown[0]}")
    return {stored for value in requested for stored in _STORED_STATUSES[value]}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
