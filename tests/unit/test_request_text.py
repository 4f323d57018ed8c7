"""A request string holding NUL is refused naming the field, wherever it sits:
top level, nested, repeated, oneof, map key or value."""

import pytest
from google.protobuf import struct_pb2

from kit.errors import InvalidArgument
from kit.grpc.request_text import check_request_text, fields_with_nul
from vectorops.common.v1 import config_pb2, source_pb2
from vectorops.orchestrator.v1 import collection_service_pb2, orchestrator_pb2


def _create(name: str, model: str = "m") -> collection_service_pb2.CreateCollectionRequest:
    return collection_service_pb2.CreateCollectionRequest(
        collection=orchestrator_pb2.Collection(
            name=name, config=config_pb2.CollectionConfig(embedding_model=model)
        ),
        request_id="r-1",
    )


def test_clean_requests_pass() -> None:
    request = _create("handbook \U0001f4a9 %00 '; DROP TABLE \t\x1b")
    request.sources.add(directory=source_pb2.DirectorySource(path="/srv/docs"))
    assert list(fields_with_nul(request)) == []
    check_request_text(request)


def test_every_string_with_nul_is_named() -> None:
    request = _create("a\x00", model="m\x00")
    request.sources.add(directory=source_pb2.DirectorySource(path="/srv"))
    request.sources.add(directory=source_pb2.DirectorySource(include_globs=["*", "\x00"]))
    assert sorted(fields_with_nul(request)) == [
        "collection.config.embedding_model",
        "collection.name",
        "sources[1].directory.include_globs[1]",
    ]
    with pytest.raises(InvalidArgument) as refused:
        check_request_text(request)
    assert refused.value.reason == "INVALID_ARGUMENT"
    assert len(refused.value.field_violations) == 3


def test_map_keys_and_values_are_looked_at() -> None:
    shape = struct_pb2.Struct()
    shape.update({"k\x00": "v", "ok": "v\x00", "fine": "x"})
    assert sorted(fields_with_nul(shape)) == [
        "fields['k\\x00']",
        "fields['ok'].string_value",
    ]
