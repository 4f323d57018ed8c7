"""Who may read a collection: its owner, an admin, or a service.

A user asking for another user's collection gets the same NOT_FOUND
(COLLECTION_NOT_FOUND) as for an id that names nothing, so ids do not leak.
"""

from __future__ import annotations

from indexer.adapters.document_repository import CollectionRecord, DocumentRepository
from kit.auth import Principal, Role
from kit.errors import NotFound


def may_read(principal: Principal, owner_id: str) -> bool:
    return principal.role is not Role.USER or principal.id == owner_id


def collection_not_found(collection_id: str) -> NotFound:
    return NotFound(
        f"collection {collection_id} not found",
        reason="COLLECTION_NOT_FOUND",
        metadata={"collection_id": collection_id},
    )


async def readable_collection(
    repository: DocumentRepository, principal: Principal, collection_id: str
) -> CollectionRecord:
    """The indexer's copy of the collection, if ``principal`` may read it."""
    if not collection_id:
        raise collection_not_found(collection_id)
    collection = await repository.get_collection(collection_id)
    if not may_read(principal, collection.owner_id):
        raise collection_not_found(collection_id)
    return collection
