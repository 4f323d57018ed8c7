"""CollectionService against the real orchestrator in-process (real Postgres,
real nats-server): what each RPC writes and publishes, idempotent retries,
every refusal with its ErrorInfo reason and nothing half-written, owner
scoping, pagination and update masks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from orchestrator_harness import (
    ADMIN,
    ALICE,
    BOB,
    HASH_MODEL,
    Orchestrator,
    collection,
    config,
    directory_source,
    eventually,
    refused,
    running_orchestrator,
)

from kit.bus import subjects
from kit.events import parse_envelope, unpack
from kit.stack.nats import NatsServer
from vectorops.common.v1 import config_pb2, operation_pb2, principal_pb2, source_pb2
from vectorops.events.v1 import commands_pb2
from vectorops.orchestrator.v1 import collection_service_pb2 as api
from vectorops.orchestrator.v1 import orchestrator_pb2

T0 = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of this module's own: the commands published here must not
    reach the session stack's indexer."""
    server = NatsServer(tmp_path_factory.mktemp("nats"), port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def orch(
    database: str, private_nats: NatsServer, tmp_path: Path
) -> AsyncIterator[Orchestrator]:
    async with running_orchestrator(database, private_nats.url, tmp_path) as running:
        yield running


async def create(
    orch: Orchestrator, name: str = "docs", metadata=ALICE, request_id: str = "", **fields
) -> api.CreateCollectionResponse:
    request = api.CreateCollectionRequest(
        collection=collection(name), request_id=request_id or f"create-{name}", **fields
    )
    return await orch.collections.CreateCollection(request, metadata=metadata)


async def ready(orch: Orchestrator, name: str = "docs", metadata=ALICE) -> str:
    """A READY collection's id."""
    created = await create(orch, name, metadata)
    await orch.finish(created.operation.id, T0)
    return created.collection.id


# --- CreateCollection -----------------------------------------------------------------------


async def test_create_writes_a_pending_collection_and_publishes_its_index_command(orch) -> None:
    data = orch.directory("data")
    response = await create(orch, sources=[directory_source(data, ("*.md",))], request_id="req-1")
    made, op = response.collection, response.operation
    assert made.status == operation_pb2.COLLECTION_STATUS_PENDING and not made.searchable
    assert made.owner_id == "alice" and made.active_operation_id == op.id
    assert made.config == config(
        dimension=384,
        quantization=config_pb2.QUANTIZATION_FLOAT32,
        chunk_size=200,
        chunk_overlap=0,
    )
    assert [s.directory.path for s in made.sources] == [str(data)]
    assert op.type == operation_pb2.OPERATION_TYPE_INDEX
    assert op.status == operation_pb2.OPERATION_STATUS_PENDING and not op.done
    assert op.collection_id == made.id and op.request_id == "req-1" and op.created_by == "alice"

    async def published():
        with_id = await orch.pool.fetchval(
            "SELECT count(*) FROM orchestrator.outbox WHERE published_at IS NOT NULL"
        )
        return with_id == 2  # the command and the operation.start audit record

    await eventually(published)
    raw = await orch.bus.js.get_last_msg("VO_COMMANDS", subjects.command_subject("INDEX"))
    envelope = parse_envelope(raw.data)
    assert raw.subject == "vo.cmd.indexer.index"
    assert (envelope.operation_id, envelope.collection_id, envelope.owner_id) == (
        op.id,
        made.id,
        "alice",
    )
    assert envelope.producer == "orchestrator"
    assert envelope.actor.principal_id == "alice"
    assert envelope.actor.role == principal_pb2.ROLE_USER
    command = unpack(envelope, commands_pb2.IndexCommand)
    assert command.operation_id == op.id
    snapshot = command.collection
    assert (snapshot.collection_id, snapshot.owner_id, snapshot.generation) == (made.id, "alice", 1)
    assert snapshot.alias_name == made.alias_name
    assert snapshot.physical_collection == made.physical_collection
    assert snapshot.config == made.config
    assert [(s.id, s.directory.path, list(s.directory.include_globs)) for s in command.sources] == [
        (made.sources[0].id, str(data), ["*.md"])
    ]


async def test_stored_config_holds_exactly_the_keys_the_indexer_reads(orch) -> None:
    response = await orch.collections.CreateCollection(
        api.CreateCollectionRequest(
            collection=collection(
                config=config(
                    "hash-bow-384",  # an alias is stored as the model's name
                    quantization=config_pb2.QUANTIZATION_INT8,
                    instruction="passage: ",
                    chunk_size=64,
                    chunk_overlap=8,
                )
            ),
            request_id="r",
        ),
        metadata=ALICE,
    )
    stored = await orch.pool.fetchval(
        "SELECT config::text FROM orchestrator.collections WHERE id = $1::uuid",
        response.collection.id,
    )
    assert json.loads(stored) == {
        "embedding_model": HASH_MODEL,
        "dimension": 384,
        "quantization": "int8",
        "instruction": "passage: ",
        "chunk_size": 64,
        "chunk_overlap": 8,
    }


async def test_a_retry_returns_the_first_result_and_a_changed_request_is_refused(orch) -> None:
    first = await create(orch, request_id="same")
    again = await create(orch, request_id="same")
    # Each create writes its command and its audit record; the retry writes nothing.
    assert again.operation.id == first.operation.id
    assert again.collection.id == first.collection.id
    assert await orch.count("collections") == 1 and await orch.count("outbox") == 2

    refusal = await refused(create(orch, "other-name", request_id="same"))
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.reason == "REQUEST_ID_REUSED"
    assert refusal.metadata == {"request_id": "same"}
    assert await orch.count("collections") == 1 and await orch.count("outbox") == 2


async def test_a_name_is_unique_per_owner(orch) -> None:
    first = await create(orch, "docs", request_id="a")
    refusal = await refused(create(orch, "docs", request_id="b"))
    assert refusal.code is grpc.StatusCode.ALREADY_EXISTS
    assert refusal.reason == "COLLECTION_NAME_TAKEN"
    assert refusal.metadata == {"name": "docs", "collection_id": first.collection.id}
    await create(orch, "docs", metadata=BOB, request_id="c")  # another owner may
    assert await orch.count("collections") == 2


@pytest.mark.parametrize(
    ("wanted", "reason", "metadata"),
    [
        (config("no/such-model"), "UNKNOWN_MODEL", {"model": "no/such-model"}),
        (
            config(dimension=768),
            "DIMENSION_MISMATCH",
            {"model": HASH_MODEL, "expected": "384", "actual": "768"},
        ),
        (
            config(chunk_size=64, chunk_overlap=64),
            "INVALID_CONFIG",
            {"field": "collection.config.chunk_overlap"},
        ),
        (
            config("sentence-transformers/all-MiniLM-L6-v2", chunk_size=256),
            "INVALID_CONFIG",
            {"field": "collection.config.chunk_size"},
        ),
        (
            config(quantization=9),
            "INVALID_CONFIG",
            {"field": "collection.config.quantization"},
        ),
        (config(""), "INVALID_ARGUMENT", {"field": "collection.config.embedding_model"}),
        (None, "INVALID_ARGUMENT", {"field": "collection.config"}),
    ],
)
async def test_invalid_configs_are_refused_and_write_nothing(
    orch, wanted, reason: str, metadata: dict[str, str]
) -> None:
    request = api.CreateCollectionRequest(
        collection=collection(config=wanted) if wanted is not None else collection(),
        request_id="r",
    )
    if wanted is None:
        request.collection.ClearField("config")
    refusal = await refused(orch.collections.CreateCollection(request, metadata=ALICE))
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    assert (refusal.reason, refusal.metadata) == (reason, metadata)
    if reason in ("INVALID_CONFIG", "INVALID_ARGUMENT"):
        assert metadata["field"] in refusal.fields
    assert await orch.count("collections") == 0 and await orch.count("idempotency_keys") == 0


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"collection": collection(""), "request_id": "r"}, "collection.name"),
        ({"collection": collection("x" * 129), "request_id": "r"}, "collection.name"),
        ({"collection": collection("bad\nname"), "request_id": "r"}, "collection.name"),
        ({"collection": collection()}, "request_id"),
    ],
)
async def test_missing_or_malformed_fields_name_the_field(orch, request_fields, field) -> None:
    request = api.CreateCollectionRequest(**request_fields)
    refusal = await refused(orch.collections.CreateCollection(request, metadata=ALICE))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert refusal.metadata == {"field": field} and refusal.fields == [field]


@pytest.mark.parametrize("escape", ["dotdot", "outside", "symlink", "relative", "file", "missing"])
async def test_source_paths_outside_the_roots_are_refused_and_write_nothing(
    orch, escape: str
) -> None:
    inside = orch.directory("inside")
    (inside / "note.txt").write_text("x")
    (orch.roots / "link").symlink_to(orch.outside, target_is_directory=True)
    path = {
        "dotdot": f"{inside}/../../outside",
        "outside": str(orch.outside),
        "symlink": str(orch.roots / "link"),
        "relative": "roots/inside",
        "file": str(inside / "note.txt"),
        "missing": str(orch.roots / "nope"),
    }[escape]
    good = directory_source(inside)
    refusal = await refused(
        create(orch, sources=[good, directory_source(path)], request_id=f"r-{escape}")
    )
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_SOURCE_PATH",
    )
    assert refusal.fields == ["sources[1].directory.path"]
    for table in ("collections", "sources", "operations", "outbox", "idempotency_keys"):
        assert await orch.count(table) == 0, table


async def test_upload_sources_are_not_taken_by_create(orch) -> None:
    upload = source_pb2.Source(upload=source_pb2.UploadSource())
    refusal = await refused(create(orch, sources=[upload]))
    assert (refusal.reason, refusal.metadata) == (
        "INVALID_ARGUMENT",
        {"field": "sources[0].upload"},
    )
    assert await orch.count("collections") == 0


async def test_a_directory_given_twice_is_refused(orch) -> None:
    folder = orch.directory("data")
    twice = [directory_source(folder), directory_source(folder, ("*.md",))]
    refusal = await refused(create(orch, sources=twice))
    assert refusal.metadata == {"field": "sources[1].directory.path"}
    assert await orch.count("collections") == 0


async def test_only_an_admin_creates_for_another_owner(orch) -> None:
    refusal = await refused(create(orch, owner_id="bob"))
    assert refusal.code is grpc.StatusCode.PERMISSION_DENIED
    assert refusal.reason == "PERMISSION_DENIED"
    made = await create(orch, metadata=ADMIN, owner_id="bob")
    assert made.collection.owner_id == "bob" and made.operation.created_by == "root"
    seen = await orch.collections.GetCollection(
        api.GetCollectionRequest(collection_id=made.collection.id), metadata=BOB
    )
    assert seen.collection.name == "docs"


# --- reading and scoping ------------------------------------------------------------------------


async def test_another_owners_collection_is_not_found_and_an_admin_sees_it(orch) -> None:
    made = (await create(orch)).collection
    get = api.GetCollectionRequest(collection_id=made.id)
    refusal = await refused(orch.collections.GetCollection(get, metadata=BOB))
    assert refusal.code is grpc.StatusCode.NOT_FOUND
    assert (refusal.reason, refusal.metadata) == (
        "COLLECTION_NOT_FOUND",
        {"collection_id": made.id},
    )
    assert (await orch.collections.GetCollection(get, metadata=ADMIN)).collection.id == made.id
    garbage = api.GetCollectionRequest(collection_id="not-a-uuid")
    assert (await refused(orch.collections.GetCollection(garbage, metadata=ALICE))).reason == (
        "COLLECTION_NOT_FOUND"
    )
    mine = await orch.collections.ListCollections(api.ListCollectionsRequest(), metadata=BOB)
    assert list(mine.collections) == []
    # A user's owner_id filter cannot widen their view; an admin's narrows it.
    sneaky = api.ListCollectionsRequest(owner_id="alice")
    assert list((await orch.collections.ListCollections(sneaky, metadata=BOB)).collections) == []
    everyone = await orch.collections.ListCollections(sneaky, metadata=ADMIN)
    assert [c.id for c in everyone.collections] == [made.id]


async def test_list_pages_newest_first_with_filters(orch) -> None:
    names = [f"c{i}" for i in range(5)]
    for name in names:
        await create(orch, name)
    await create(orch, "other", metadata=BOB)
    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = await orch.collections.ListCollections(
            api.ListCollectionsRequest(page_size=2, page_token=token), metadata=ALICE
        )
        seen += [c.name for c in page.collections]
        token, pages = page.next_page_token, pages + 1
        if not token:
            break
    assert seen == list(reversed(names)) and pages == 3

    first = await orch.collections.ListCollections(
        api.ListCollectionsRequest(page_size=2), metadata=ALICE
    )
    other_filters = api.ListCollectionsRequest(
        page_size=2, page_token=first.next_page_token, name_prefix="c"
    )
    refusal = await refused(orch.collections.ListCollections(other_filters, metadata=ALICE))
    assert (refusal.reason, refusal.metadata) == ("INVALID_PAGE_TOKEN", {"field": "page_token"})

    await orch.finish((await create(orch, "ready-one")).operation.id, T0)
    prefixed = await orch.collections.ListCollections(
        api.ListCollectionsRequest(name_prefix="ready"), metadata=ALICE
    )
    assert [c.name for c in prefixed.collections] == ["ready-one"]
    by_status = await orch.collections.ListCollections(
        api.ListCollectionsRequest(statuses=[operation_pb2.COLLECTION_STATUS_READY]),
        metadata=ALICE,
    )
    assert [(c.name, c.searchable) for c in by_status.collections] == [("ready-one", True)]


# --- UpdateCollection ------------------------------------------------------------


def update(collection_id: str, paths: list[str], request_id: str, **fields):
    return api.UpdateCollectionRequest(
        collection=orchestrator_pb2.Collection(id=collection_id, **fields),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        request_id=request_id,
    )


async def test_update_changes_name_and_description_and_is_idempotent(orch) -> None:
    made = (await create(orch, "before")).collection
    request = update(made.id, ["name", "description"], "u1", name="after", description="d")
    updated = (await orch.collections.UpdateCollection(request, metadata=ALICE)).collection
    assert (updated.name, updated.description) == ("after", "d")
    assert updated.config == made.config  # untouched
    again = await orch.collections.UpdateCollection(request, metadata=ALICE)
    assert again.collection.name == "after"
    changed = update(made.id, ["name"], "u1", name="third")
    refusal = await refused(orch.collections.UpdateCollection(changed, metadata=ALICE))
    assert refusal.reason == "REQUEST_ID_REUSED"
    only_description = update(made.id, ["description"], "u2", name="ignored", description="e")
    result = (await orch.collections.UpdateCollection(only_description, metadata=ALICE)).collection
    assert (result.name, result.description) == ("after", "e")


@pytest.mark.parametrize(
    ("paths", "reason", "field"),
    [
        ([], "INVALID_ARGUMENT", "update_mask"),
        (["config"], "FIELD_NOT_UPDATABLE", "config"),
        (["name", "config.chunk_size"], "FIELD_NOT_UPDATABLE", "config.chunk_size"),
        (["*"], "FIELD_NOT_UPDATABLE", "*"),
    ],
)
async def test_update_masks_name_only_updatable_fields(orch, paths, reason, field) -> None:
    made = (await create(orch)).collection
    request = update(made.id, paths, "u", name="new")
    refusal = await refused(orch.collections.UpdateCollection(request, metadata=ALICE))
    assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT
    assert (refusal.reason, refusal.metadata) == (reason, {"field": field})
    stored = await orch.collections.GetCollection(
        api.GetCollectionRequest(collection_id=made.id), metadata=ALICE
    )
    assert stored.collection.name == "docs"


async def test_renaming_to_a_taken_name_or_another_owners_collection_is_refused(orch) -> None:
    taken = (await create(orch, "taken")).collection
    made = (await create(orch, "mine")).collection
    refusal = await refused(
        orch.collections.UpdateCollection(
            update(made.id, ["name"], "u", name="taken"), metadata=ALICE
        )
    )
    assert refusal.code is grpc.StatusCode.ALREADY_EXISTS
    assert refusal.metadata == {"name": "taken", "collection_id": taken.id}
    refusal = await refused(
        orch.collections.UpdateCollection(update(made.id, ["name"], "u", name="x"), metadata=BOB)
    )
    assert refusal.reason == "COLLECTION_NOT_FOUND"


# --- operations on an existing collection ----------------------------------------


async def test_a_second_operation_is_refused_naming_the_active_one(orch) -> None:
    created = await create(orch)
    request = api.AddSourceRequest(
        collection_id=created.collection.id,
        source=directory_source(orch.directory("more")),
        request_id="add",
    )
    refusal = await refused(orch.collections.AddSource(request, metadata=ALICE))
    assert refusal.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refusal.reason == "OPERATION_IN_PROGRESS"
    assert refusal.metadata == {
        "collection_id": created.collection.id,
        "active_operation_id": created.operation.id,
    }
    failure = refusal.detail(error_details_pb2.PreconditionFailure)
    assert failure.violations[0].subject == f"operations/{created.operation.id}"
    assert await orch.count("sources") == 0  # the refused source was not added


async def test_add_source_starts_an_append_with_its_command(orch) -> None:
    collection_id = await ready(orch)
    folder = orch.directory("more")
    request = api.AddSourceRequest(
        collection_id=collection_id, source=directory_source(folder, ("*.txt",)), request_id="a"
    )
    added = await orch.collections.AddSource(request, metadata=ALICE)
    assert added.source.id and added.source.directory.path == str(folder)
    assert added.operation.type == operation_pb2.OPERATION_TYPE_APPEND
    assert added.operation.source_id == added.source.id
    again = await orch.collections.AddSource(request, metadata=ALICE)
    assert (again.operation.id, again.source.id) == (added.operation.id, added.source.id)
    [envelope] = await orch.outbox(subjects.command_subject("APPEND"))
    command = unpack(envelope, commands_pb2.AppendCommand)
    assert command.operation_id == added.operation.id
    assert command.source.id == added.source.id
    assert list(command.source.directory.include_globs) == ["*.txt"]
    assert command.collection.collection_id == collection_id
    seen = await orch.collections.GetCollection(
        api.GetCollectionRequest(collection_id=collection_id), metadata=ALICE
    )
    assert seen.collection.status == operation_pb2.COLLECTION_STATUS_PROCESSING
    assert seen.collection.searchable  # serving goes on during an APPEND

    await orch.finish(added.operation.id, T0)
    other_globs = api.AddSourceRequest(
        collection_id=collection_id, source=directory_source(folder), request_id="b"
    )
    refusal = await refused(orch.collections.AddSource(other_globs, metadata=ALICE))
    assert refusal.code is grpc.StatusCode.ALREADY_EXISTS
    assert refusal.metadata == {"source_id": added.source.id}

    # The same directory with the same globs: an APPEND that re-scans that source.
    rescan = api.AddSourceRequest(
        collection_id=collection_id, source=directory_source(folder, ("*.txt",)), request_id="c"
    )
    again = await orch.collections.AddSource(rescan, metadata=ALICE)
    assert again.operation.id != added.operation.id
    assert again.operation.source_id == again.source.id == added.source.id
    assert await orch.count("sources") == 1


async def test_add_source_checks_the_path_and_the_kind(orch) -> None:
    collection_id = await ready(orch)
    outside = api.AddSourceRequest(
        collection_id=collection_id, source=directory_source(orch.outside), request_id="a"
    )
    refusal = await refused(orch.collections.AddSource(outside, metadata=ALICE))
    assert refusal.reason == "INVALID_SOURCE_PATH"
    assert refusal.fields == ["source.directory.path"]
    empty = api.AddSourceRequest(collection_id=collection_id, request_id="b")
    refusal = await refused(orch.collections.AddSource(empty, metadata=ALICE))
    assert refusal.metadata == {"field": "source.directory"}
    assert await orch.count("operations") == 1  # only the INDEX


async def test_remove_source_starts_a_remove_source_operation(orch) -> None:
    folder = orch.directory("data")
    created = await create(orch, sources=[directory_source(folder)])
    await orch.finish(created.operation.id, T0)
    source_id = created.collection.sources[0].id
    missing = api.RemoveSourceRequest(
        collection_id=created.collection.id,
        source_id="00000000-0000-0000-0000-000000000000",
        request_id="m",
    )
    refusal = await refused(orch.collections.RemoveSource(missing, metadata=ALICE))
    assert refusal.code is grpc.StatusCode.NOT_FOUND and refusal.reason == "SOURCE_NOT_FOUND"
    request = api.RemoveSourceRequest(
        collection_id=created.collection.id, source_id=source_id, request_id="r"
    )
    removing = await orch.collections.RemoveSource(request, metadata=ALICE)
    assert removing.operation.type == operation_pb2.OPERATION_TYPE_REMOVE_SOURCE
    assert removing.operation.source_id == source_id
    [envelope] = await orch.outbox(subjects.command_subject("REMOVE_SOURCE"))
    command = unpack(envelope, commands_pb2.RemoveSourceCommand)
    assert (command.operation_id, command.source_id) == (removing.operation.id, source_id)


async def test_delete_sends_every_physical_collection_and_marks_it_deleting(orch) -> None:
    collection_id = await ready(orch)
    request = api.DeleteCollectionRequest(collection_id=collection_id, request_id="d")
    deleting = await orch.collections.DeleteCollection(request, metadata=ALICE)
    assert deleting.operation.type == operation_pb2.OPERATION_TYPE_DELETE
    seen = (
        await orch.collections.GetCollection(
            api.GetCollectionRequest(collection_id=collection_id), metadata=ALICE
        )
    ).collection
    assert seen.status == operation_pb2.COLLECTION_STATUS_DELETING and not seen.searchable
    [envelope] = await orch.outbox(subjects.command_subject("DELETE"))
    command = unpack(envelope, commands_pb2.DeleteCommand)
    assert list(command.physical_collections) == [seen.physical_collection]
    # Nothing else may start, and no change is taken, while it is deleted.
    again = api.DeleteCollectionRequest(collection_id=collection_id, request_id="d2", force=True)
    refusal = await refused(orch.collections.DeleteCollection(again, metadata=ALICE))
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "COLLECTION_DELETING",
    )
    rename = update(collection_id, ["name"], "u", name="x")
    assert (await refused(orch.collections.UpdateCollection(rename, metadata=ALICE))).reason == (
        "COLLECTION_DELETING"
    )
    await orch.finish(deleting.operation.id, T0)
    gone = await refused(
        orch.collections.GetCollection(
            api.GetCollectionRequest(collection_id=collection_id), metadata=ALICE
        )
    )
    assert gone.reason == "COLLECTION_NOT_FOUND"
    # A retry after the collection is gone still gets the first answer.
    retried = await orch.collections.DeleteCollection(request, metadata=ALICE)
    assert retried.operation.id == deleting.operation.id and retried.operation.done


async def test_forced_delete_cancels_the_running_operation_first(orch) -> None:
    created = await create(orch)
    busy = api.DeleteCollectionRequest(collection_id=created.collection.id, request_id="d1")
    refusal = await refused(orch.collections.DeleteCollection(busy, metadata=ALICE))
    assert refusal.reason == "OPERATION_IN_PROGRESS"
    forced = api.DeleteCollectionRequest(
        collection_id=created.collection.id, request_id="d2", force=True
    )
    deleting = await orch.collections.DeleteCollection(forced, metadata=ADMIN)
    assert deleting.operation.type == operation_pb2.OPERATION_TYPE_DELETE
    index = await orch.app.repository.get_operation(created.operation.id, None)
    assert index.operation.status.value == "CANCELLED"
    [cancel] = await orch.outbox(subjects.CANCEL)
    payload = unpack(cancel, commands_pb2.CancelOperationCommand)
    assert (payload.operation_id, payload.collection_id) == (
        created.operation.id,
        created.collection.id,
    )
    assert cancel.owner_id == "alice" and cancel.actor.principal_id == "root"
    assert len(await orch.outbox(subjects.command_subject("DELETE"))) == 1
    seen = await orch.app.repository.get_collection(created.collection.id, None)
    assert seen.status.value == "DELETING" and seen.active_operation_id == deleting.operation.id


async def test_reflection_lists_the_longrunning_service(orch) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(orch.channel)

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for answer in stub.ServerReflectionInfo(ask()):
        names = {service.name for service in answer.list_services_response.service}
        break
    assert {
        "google.longrunning.Operations",
        "vectorops.orchestrator.v1.CollectionService",
        "vectorops.orchestrator.v1.OperationService",
        "vectorops.orchestrator.v1.ReindexControlService",
    } <= names
