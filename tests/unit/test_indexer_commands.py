"""Decoding the orchestrator's commands into the orders the indexer runs."""

from __future__ import annotations

import uuid

import pytest

from indexer.commands import UnknownCommand, config_of, decode
from kit.events import new_envelope
from kit.operation_protocol import OperationType
from vectorops.common.v1 import config_pb2, source_pb2
from vectorops.events.v1 import commands_pb2, usage_pb2


def _snapshot(collection_id: str) -> commands_pb2.CollectionSnapshot:
    return commands_pb2.CollectionSnapshot(
        collection_id=collection_id,
        owner_id="alice",
        alias_name="vo_alias",
        physical_collection="vo_physical_g1",
        generation=3,
        config=config_pb2.CollectionConfig(
            embedding_model="vectorops/hash-bow-384",
            dimension=384,
            quantization=config_pb2.QUANTIZATION_INT8,
            chunk_size=64,
            chunk_overlap=8,
        ),
    )


def _directory(path: str) -> source_pb2.Source:
    return source_pb2.Source(
        id=str(uuid.uuid4()),
        directory=source_pb2.DirectorySource(
            path=path, include_globs=["*.txt"], exclude_globs=["drafts"]
        ),
    )


def test_index_command_becomes_an_order_with_its_sources_and_collection() -> None:
    operation, collection = str(uuid.uuid4()), str(uuid.uuid4())
    source = _directory("/data/docs")
    command = commands_pb2.IndexCommand(
        operation_id=operation,
        collection=_snapshot(collection),
        sources=[source],
        max_documents=10,
    )
    envelope = new_envelope(command, producer="orchestrator", trace_id="ab" * 16)
    order = decode(envelope)
    assert order.type is OperationType.INDEX
    assert (order.operation_id, order.collection_id, order.owner_id) == (
        operation,
        collection,
        "alice",
    )
    assert order.collection.physical_collection == "vo_physical_g1"
    assert order.collection.generation == 3
    assert order.collection.config == {
        "embedding_model": "vectorops/hash-bow-384",
        "dimension": 384,
        "quantization": "int8",
        "chunk_size": 64,
        "chunk_overlap": 8,
    }
    [record] = order.sources
    assert (record.source_id, record.kind, record.path) == (source.id, "directory", "/data/docs")
    assert (record.include, record.exclude) == (("*.txt",), ("drafts",))
    assert order.max_documents == 10
    assert order.trace_id == "ab" * 16 and order.causation_id == envelope.event_id


def test_append_of_an_upload_is_marked_so() -> None:
    command = commands_pb2.AppendCommand(
        operation_id=str(uuid.uuid4()),
        collection=_snapshot(str(uuid.uuid4())),
        source=source_pb2.Source(id=str(uuid.uuid4()), upload=source_pb2.UploadSource()),
    )
    order = decode(new_envelope(command, producer="orchestrator"))
    assert order.type is OperationType.APPEND and order.upload is not None
    assert order.sources[0].kind == "upload"


def test_remove_source_reindex_and_delete_commands() -> None:
    snapshot = _snapshot(str(uuid.uuid4()))
    remove = decode(
        new_envelope(
            commands_pb2.RemoveSourceCommand(
                operation_id=str(uuid.uuid4()), collection=snapshot, source_id="s-1"
            ),
            producer="orchestrator",
        )
    )
    assert remove.type is OperationType.REMOVE_SOURCE and remove.source_id == "s-1"
    reindex = decode(
        new_envelope(
            commands_pb2.ReindexCommand(operation_id=str(uuid.uuid4()), collection=snapshot),
            producer="orchestrator",
        )
    )
    assert reindex.type is OperationType.REINDEX
    delete = decode(
        new_envelope(
            commands_pb2.DeleteCommand(
                operation_id=str(uuid.uuid4()),
                collection=snapshot,
                physical_collections=["vo_a", "vo_b"],
            ),
            producer="orchestrator",
        )
    )
    assert delete.type is OperationType.DELETE
    assert delete.physical_collections == ("vo_a", "vo_b")


def test_what_is_not_a_command_is_refused() -> None:
    with pytest.raises(UnknownCommand):
        decode(new_envelope(usage_pb2.UsageDelta(), producer="x"))
    not_a_uuid = commands_pb2.DeleteCommand(
        operation_id="op-1", collection=_snapshot(str(uuid.uuid4()))
    )
    with pytest.raises(UnknownCommand, match="operation_id"):
        decode(new_envelope(not_a_uuid, producer="orchestrator"))


def test_config_keeps_an_instruction_only_when_set() -> None:
    config = config_pb2.CollectionConfig(embedding_model="m", chunk_size=10)
    assert "instruction" not in config_of(config)
    assert config_of(config)["quantization"] == "float32"
    config.instruction = ""
    assert config_of(config)["instruction"] == ""
