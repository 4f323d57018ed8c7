"""The indexer's side of an upload, without I/O: the manifest an AppendCommand
carries, decoded into the order, and a declared media type honoured by
extraction."""

from __future__ import annotations

import uuid

import pytest

from indexer.commands import decode
from indexer.domain.operation_plan import OperationType
from indexer.extraction import ExtractionError, ExtractionFailure, extract
from kit.events import new_envelope
from kit.media_types import MediaType
from vectorops.common.v1 import config_pb2, source_pb2
from vectorops.events.v1 import commands_pb2


def _append(manifest: commands_pb2.UploadManifest | None) -> commands_pb2.AppendCommand:
    collection_id = str(uuid.uuid4())
    return commands_pb2.AppendCommand(
        operation_id=str(uuid.uuid4()),
        collection=commands_pb2.CollectionSnapshot(
            collection_id=collection_id,
            owner_id="alice",
            alias_name="vo_x",
            physical_collection="vo_x_g1",
            generation=1,
            config=config_pb2.CollectionConfig(embedding_model="vectorops/hash-bow-384"),
        ),
        source=source_pb2.Source(
            id=str(uuid.uuid4()), display_name="handbook", upload=source_pb2.UploadSource()
        ),
        upload=manifest,
    )


def test_an_append_carries_its_upload_manifest_into_the_order() -> None:
    manifest = commands_pb2.UploadManifest(
        bucket="vo_uploads",
        documents=[
            commands_pb2.UploadedDocument(
                path="guides/a.md",
                media_type="text/markdown",
                size_bytes=12,
                sha256="ab" * 32,
                object_name="c/s/" + "ab" * 32,
            ),
            commands_pb2.UploadedDocument(
                path="README", media_type="text/plain", size_bytes=3, sha256="cd" * 32
            ),
        ],
    )
    order = decode(new_envelope(_append(manifest), producer="orchestrator"))
    assert order.type is OperationType.APPEND
    [source] = order.sources
    assert (source.kind, source.path) == ("upload", "handbook")
    assert order.upload is not None and order.upload.bucket == "vo_uploads"
    assert order.upload.digests() == {"guides/a.md": "ab" * 32, "README": "cd" * 32}
    first = order.upload.by_path()["guides/a.md"]
    assert (first.media_type, first.size_bytes, first.object_name) == (
        "text/markdown",
        12,
        "c/s/" + "ab" * 32,
    )


def test_a_directory_append_has_no_manifest() -> None:
    command = _append(None)
    command.source.ClearField("upload")
    command.source.directory.path = "/data/docs"
    order = decode(new_envelope(command, producer="orchestrator"))
    assert order.upload is None and order.sources[0].kind == "directory"


def test_a_declared_media_type_decides_how_a_document_is_read() -> None:
    text = b"# Release notes\n\nThe **upload** path now streams."
    with pytest.raises(ExtractionError) as error:
        extract(text, "RELEASE")
    assert error.value.reason is ExtractionFailure.UNSUPPORTED_MEDIA_TYPE
    document = extract(text, "RELEASE", "text/markdown")
    assert document.media_type is MediaType.MARKDOWN
    assert "**" not in document.text and "upload" in document.text
