"""Bad requests through the running stack get the status and ErrorInfo reason they
should, and change nothing: path escapes, unknown collections, a second operation
while one runs, an invalid chunk config, a reused request_id."""

from __future__ import annotations

import os
import uuid

import grpc
import pytest
from api import HASH_MODEL, Client, config, directory, error_reason, request_id
from corpus import write_text_corpus

from vectorops.orchestrator.v1 import collection_service_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack):
    api = Client(stack, stack.tokens.clear["user"])
    yield api
    api.close()


def _refused(call, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as refusal:
        call()
    assert refusal.value.code() == code, refusal.value.details()
    assert error_reason(refusal.value) == reason


def _names(client: Client) -> set[str]:
    listed = client.collections.ListCollections(
        collection_service_pb2.ListCollectionsRequest(page_size=1000),
        metadata=client.metadata,
        timeout=30,
    )
    return {c.name for c in listed.collections}


def test_bad_requests_are_refused_and_change_nothing(stack, client, tmp_path) -> None:
    root = stack.options.roots()[0] / f"refusals-{uuid.uuid4().hex[:8]}"
    write_text_corpus(root / "docs", 400, 200)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "escape")
    before = _names(client)
    name = f"refusals-{uuid.uuid4().hex[:6]}"
    invalid = grpc.StatusCode.INVALID_ARGUMENT

    for path in (f"{root}/../..", str(outside), str(root / "escape"), "relative/dir"):
        _refused(
            lambda path=path: client.create(name, config(), [directory(path)]),
            invalid,
            "INVALID_SOURCE_PATH",
        )
    _refused(
        lambda: client.create(name, config(chunk_size=64, overlap=64)), invalid, "INVALID_CONFIG"
    )
    _refused(lambda: client.create(name, config(chunk_size=100_000)), invalid, "INVALID_CONFIG")
    _refused(lambda: client.create(name, config("no/such-model")), invalid, "UNKNOWN_MODEL")
    assert _names(client) == before  # nothing was created

    unknown = str(uuid.uuid4())
    _refused(lambda: client.get(unknown), grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")
    _refused(
        lambda: client.add_source(unknown, directory(str(root / "docs"))),
        grpc.StatusCode.NOT_FOUND,
        "COLLECTION_NOT_FOUND",
    )
    _refused(
        lambda: client.search(unknown, "anything"),
        grpc.StatusCode.NOT_FOUND,
        "COLLECTION_NOT_FOUND",
    )

    # A second operation while the first (400 documents) runs names the running one.
    rid = request_id()
    created = client.create(name, config(HASH_MODEL), [directory(str(root / "docs"))], rid=rid)
    with pytest.raises(grpc.RpcError) as busy:
        client.remove_source(created.collection.id, str(uuid.uuid4()))
    assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(busy.value) == "OPERATION_IN_PROGRESS"
    assert created.operation.id in busy.value.details()

    # The same request_id: the first result; with another request: REQUEST_ID_REUSED.
    again = client.create(name, config(HASH_MODEL), [directory(str(root / "docs"))], rid=rid)
    assert (again.collection.id, again.operation.id) == (
        created.collection.id,
        created.operation.id,
    )
    _refused(
        lambda: client.create(f"{name}-other", config(HASH_MODEL), rid=rid),
        invalid,
        "REQUEST_ID_REUSED",
    )
    assert _names(client) == before | {name}
    client.finish(created.operation.id)
    assert [s.directory.path for s in client.get(created.collection.id).sources] == [
        str(root / "docs")
    ]
