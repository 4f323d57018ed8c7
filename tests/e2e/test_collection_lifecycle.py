"""The main job of the system, through the public gRPC API with real services all
the way: create a collection from a directory of every supported type (and one
corrupt PDF), watch it index, search it, append a second source, append again with
nothing changed, remove the first source, delete the collection."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import grpc
import pytest
from api import MINILM, Client, config, directory, error_reason
from corpus import (
    CORRUPT_PDF,
    FIRST_SOURCE,
    SECOND_SOURCE,
    write_corrupt_pdf,
    write_source,
)

from vectorops.common.v1 import operation_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack):
    api = Client(stack, stack.tokens.clear["user"])
    yield api
    api.close()


@pytest.fixture
def source_dirs(stack) -> tuple[Path, Path]:
    root = stack.options.roots()[0] / f"e2e-{uuid.uuid4().hex[:8]}"
    return root / "first", root / "second"


def _store_names(stack) -> tuple[set[str], dict[str, str]]:
    """The embedded engine's collections (one folder each) and aliases, on disk."""
    store = stack.options.data_dir / "indexer" / "qdrant"
    collections = {p.name for p in (store / "collections").iterdir() if p.is_dir()}
    aliases_file = store / "aliases.json"
    aliases = json.loads(aliases_file.read_text()) if aliases_file.exists() else {}
    return collections, aliases


def test_create_watch_search_append_remove_delete(stack, client, source_dirs) -> None:
    first, second = source_dirs
    first_probes = write_source(first, FIRST_SOURCE)
    write_corrupt_pdf(first)
    second_probes = write_source(second, SECOND_SOURCE)

    # -- create from the first directory and watch it to the end --
    created = client.create(
        f"lifecycle-{uuid.uuid4().hex[:6]}", config(MINILM, 128, 16), [directory(str(first))]
    )
    collection_id = created.collection.id
    updates = client.watch(created.operation.id)
    final = updates[-1]
    assert final.status == operation_pb2.OPERATION_STATUS_COMPLETED, final.error
    assert final.progress.documents_failed == 1
    assert final.progress.documents_done == len(FIRST_SOURCE) + 1
    assert final.progress.vectors_written >= len(FIRST_SOURCE)
    # Steps stream as they happen, but a quick INDEX can end between two looks of
    # the watcher (it sends the latest state); the checkpoints stay on the operation.
    assert final.last_checkpoint == "finalize"
    assert final.resources.wall_seconds > 0 and final.resources.peak_memory_bytes > 0

    documents = {d.path: d for d in client.list_documents(collection_id)}
    assert documents[CORRUPT_PDF].failure_reason  # recorded with its reason
    assert all(documents[p.path].chunk_count >= 1 for p in first_probes)

    collection = client.get(collection_id)
    assert collection.searchable and collection.document_count == len(FIRST_SOURCE)
    first_id = collection.sources[0].id
    points_after_index = collection.vector_count
    assert points_after_index == sum(d.chunk_count for d in documents.values())

    # -- every query finds the file written for it first --
    for probe in first_probes:
        hits = client.search(collection_id, probe.query).hits
        assert hits and hits[0].path == probe.path, (probe.query, [h.path for h in hits])

    # -- append a second source --
    appended = client.add_source(collection_id, directory(str(second)))
    client.finish(appended.operation.id)
    second_id = appended.source.id
    for probe in second_probes:
        hits = client.search(collection_id, probe.query).hits
        assert hits[0].path == probe.path and hits[0].source_id == second_id

    # -- append again with nothing changed: no new vectors --
    again = client.add_source(collection_id, directory(str(second)))
    rerun = client.finish(again.operation.id)
    assert rerun.progress.vectors_written == 0
    assert rerun.progress.documents_skipped == len(SECOND_SOURCE)
    with_both = client.get(collection_id)
    assert with_both.document_count == len(FIRST_SOURCE) + len(SECOND_SOURCE)

    # -- remove the first source: none of its points left --
    removal = client.remove_source(collection_id, first_id)
    client.finish(removal.id)
    assert client.search(collection_id, first_probes[0].query, source_ids=[first_id]).hits == []
    hits = client.search(collection_id, first_probes[0].query, top_k=50).hits
    assert hits and {h.source_id for h in hits} == {second_id}
    remaining = client.get(collection_id)
    assert remaining.document_count == len(SECOND_SOURCE)
    assert [s.id for s in remaining.sources] == [second_id]
    assert client.list_documents(collection_id, first_id) == []

    # -- delete: the collection, its alias and its Qdrant collection are gone --
    physical, alias = remaining.physical_collection, remaining.alias_name
    assert physical in _store_names(stack)[0]
    deletion = client.delete(collection_id)
    client.finish(deletion.id)
    with pytest.raises(grpc.RpcError) as missing:
        client.get(collection_id)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(missing.value) == "COLLECTION_NOT_FOUND"
    collections, aliases = _store_names(stack)
    assert not {name for name in collections if name.startswith(alias)}
    assert alias not in aliases
