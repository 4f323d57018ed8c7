"""The JetStream object store bucket of uploaded documents (``vo_uploads``).

The orchestrator writes each document a client uploads (UploadDocuments); the
indexer reads them back through the ``UploadManifest`` of an ``AppendCommand``.
Both create the bucket at start-up, idempotently, with the same config.

Objects are content-addressed, ``<collection_id>/<source_id>/<sha256>``: the
same bytes uploaded twice to a source are one object, so a retried upload
re-puts nothing, and an object never changes under a reader. Objects stay
after they are indexed (a later REINDEX can read them again); the bucket's
max age, when set, bounds how long.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from nats.js import JetStreamContext, api
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    DigestMismatchError,
    ObjectNotFoundError,
)
from nats.js.object_store import ObjectStore

from kit.logs import get_logger

log = get_logger(__name__)

UPLOADS_BUCKET = "vo_uploads"
DEFAULT_FETCH_TIMEOUT_SECONDS = 120.0


class ObjectUnreadable(LookupError):
    """An object that is not in the bucket (never written, deleted, expired) or
    whose bytes are not the ones named."""


def upload_object_name(collection_id: str, source_id: str, sha256: str) -> str:
    return f"{collection_id}/{source_id}/{sha256}"


def _nats_digest(sha256_hex: str) -> str:
    """The digest nats writes in an object's info for these SHA-256 bytes."""
    return "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode()


@dataclass
class _HashingWriter:
    """Passes bytes on to ``target`` and hashes them on the way (the object store
    calls ``write`` from a worker thread)."""

    target: BinaryIO
    size: int = 0

    def __post_init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.target.write(data)


class ObjectBucket:
    """One object store bucket: content-addressed puts and verified reads."""

    def __init__(self, store: ObjectStore, name: str) -> None:
        self._store = store
        self.name = name

    @classmethod
    async def ensure(
        cls,
        js: JetStreamContext,
        name: str = UPLOADS_BUCKET,
        *,
        storage: str = "file",
        replicas: int = 1,
        max_age_seconds: float = 0.0,
    ) -> ObjectBucket:
        """The bucket, created if missing; safe to repeat and to race (the
        orchestrator and the indexer both call it at start-up). A bucket that
        exists with another config is used as it is, not changed under the
        other service."""
        try:
            return cls(await js.object_store(name), name)
        except BucketNotFoundError:
            pass
        config = api.ObjectStoreConfig(
            bucket=name,
            description="vectorops: documents uploaded through UploadDocuments",
            storage=api.StorageType(storage),
            replicas=replicas,
            ttl=max_age_seconds or None,
        )
        try:
            store = await js.create_object_store(name, config)
        except BadRequestError as error:
            # Created meanwhile by the other service, with a config of its own.
            log.info("object_store.exists", bucket=name, detail=str(error))
            store = await js.object_store(name)
        return cls(store, name)

    async def holds(self, name: str, size: int, sha256: str) -> bool:
        """True when the object exists with exactly these bytes."""
        try:
            info = await self._store.get_info(name)
        except ObjectNotFoundError:
            return False
        return info.size == size and info.digest == _nats_digest(sha256)

    async def put(self, name: str, reader: BinaryIO, *, size: int, sha256: str) -> bool:
        """Store what ``reader`` holds (read in pieces, in a worker thread) under
        ``name``, unless the object already holds these bytes. True when written."""
        if await self.holds(name, size, sha256):
            return False
        info = await self._store.put(name, reader)
        if info.size != size or info.digest != _nats_digest(sha256):
            # The reader changed under us: a bug, not the client's fault.
            raise RuntimeError(f"object {name} was stored with other bytes than hashed")
        return True

    async def fetch_into(
        self,
        name: str,
        writer: BinaryIO,
        *,
        size: int,
        sha256: str,
        timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
    ) -> None:
        """Write the object's bytes to ``writer`` and check they are ``size``
        bytes hashing to ``sha256``; ``ObjectUnreadable`` if not. NATS being
        unreachable raises its own (transient) errors."""
        hashing = _HashingWriter(writer)
        try:
            await asyncio.wait_for(
                self._store.get(name, writeinto=hashing),  # type: ignore[arg-type]
                timeout_seconds,
            )
        except ObjectNotFoundError:
            raise ObjectUnreadable(f"object {name} is not in bucket {self.name}") from None
        except DigestMismatchError:
            raise ObjectUnreadable(f"object {name} failed its own digest check") from None
        except TimeoutError:
            # Its chunks expired before its info, or the stream stalls: give up on it.
            raise ObjectUnreadable(f"object {name} could not be read in time") from None
        if hashing.size != size or hashing.digest.hexdigest() != sha256:
            raise ObjectUnreadable(f"object {name} does not hold the bytes its name says")
