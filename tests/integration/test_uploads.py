"""CollectionService.UploadDocuments: documents streamed in by a client that
shares no filesystem with the indexer.

The orchestrator's side runs in-process on a nats-server of this module's own
(real Postgres, real JetStream object store): what one upload stores and
starts, every refusal with its reason and nothing started, retries. End to
end, through the whole stack and the public API: uploaded documents are
indexed and found by search, a second upload to the same source skips what is
unchanged and replaces what changed, and keeps the source's other documents.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from api import Client, config, error_reason
from corpus import docx_bytes
from nats.js.errors import NotFoundError
from orchestrator_harness import (
    ALICE,
    BOB,
    Orchestrator,
    directory_source,
    refused,
    running_orchestrator,
)
from orchestrator_harness import collection as collection_message

from indexer.adapters.document_repository import CollectionRecord as IndexerCollection
from indexer.adapters.document_repository import DocumentRepository, DocumentStatus
from indexer.adapters.document_repository import SourceRecord as IndexerSource
from indexer.adapters.edge_store import EdgeVectorStore
from indexer.ingest import Ingestor
from indexer.upload_source import ManifestDocument, UploadManifest
from kit.bus import subjects
from kit.bus.jetstream import JetStream
from kit.bus.object_store import UPLOADS_BUCKET, ObjectBucket, ObjectUnreadable
from kit.db.migrations import load_migrations, migrate
from kit.events import unpack
from kit.hash_embedding import hash_embed
from kit.stack.nats import NatsServer
from vectorops.common.v1 import operation_pb2
from vectorops.events.v1 import commands_pb2
from vectorops.orchestrator.v1 import collection_service_pb2 as api

T0 = datetime(2024, 5, 1, tzinfo=UTC)
MAX_DOCUMENT_BYTES = 4096
MAX_BYTES = 16 * 1024
Request = api.UploadDocumentsRequest


# --- building a stream ------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def header(collection_id: str, request_id: str = "up-1", **fields) -> Request:
    return Request(
        header=api.UploadHeader(collection_id=collection_id, request_id=request_id, **fields)
    )


def document(
    path: str, data: bytes, *, piece: int = 1000, media_type: str = "", digest: str | None = None
) -> list[Request]:
    """A document's chunks, ``piece`` bytes each; the last carries its SHA-256."""
    pieces = [data[start : start + piece] for start in range(0, len(data), piece)] or [b""]
    chunks = [api.DocumentChunk(path=path, data=part) for part in pieces]
    chunks[0].media_type = media_type
    chunks[-1].last = True
    chunks[-1].sha256 = sha(data) if digest is None else digest
    return [Request(chunk=chunk) for chunk in chunks]


def stream(first: Request | None, *documents: list[Request]) -> list[Request]:
    return ([first] if first is not None else []) + [c for d in documents for c in d]


# --- the orchestrator in-process ----------------------------------------------------------


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """Commands published here must not reach the session stack's indexer."""
    server = NatsServer(tmp_path_factory.mktemp("nats"), port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def orch(database: str, private_nats: NatsServer, tmp_path) -> AsyncIterator[Orchestrator]:
    async with running_orchestrator(
        database,
        private_nats.url,
        tmp_path,
        orchestrator_upload_max_document_bytes=MAX_DOCUMENT_BYTES,
        orchestrator_upload_max_bytes=MAX_BYTES,
    ) as running:
        yield running


async def ready(orch: Orchestrator, name: str = "docs", sources=()) -> api.CreateCollectionResponse:
    created = await orch.collections.CreateCollection(
        api.CreateCollectionRequest(
            collection=collection_message(name), sources=list(sources), request_id=f"c-{name}"
        ),
        metadata=ALICE,
    )
    await orch.finish(created.operation.id, T0)
    return created


async def upload(orch: Orchestrator, requests: list[Request], metadata=ALICE):
    return await orch.collections.UploadDocuments(iter(requests), metadata=metadata)


async def appends(orch: Orchestrator) -> list[commands_pb2.AppendCommand]:
    envelopes = await orch.outbox(subjects.command_subject("APPEND"))
    return [unpack(envelope, commands_pb2.AppendCommand) for envelope in envelopes]


async def bytes_of(orch: Orchestrator, name: str, size: int, digest: str) -> bytes:
    bucket = await ObjectBucket.ensure(orch.bus.js)
    out = io.BytesIO()
    await bucket.fetch_into(name, out, size=size, sha256=digest)
    return out.getvalue()


async def stored(orch: Orchestrator, data: bytes) -> bool:
    """Whether any object of the bucket holds ``data`` (its name ends with the hash)."""
    store = await orch.bus.js.object_store(UPLOADS_BUCKET)
    try:
        objects = await store.list(ignore_deletes=True)
    except NotFoundError:  # an empty bucket
        return False
    return any(info.name.endswith(sha(data)) for info in objects)


async def nothing_started(orch: Orchestrator) -> None:
    """Only the INDEX of ``ready``: no APPEND, no source."""
    assert await orch.count("operations") == 1
    assert await orch.count("sources") == 0
    assert await appends(orch) == []


# --- one upload ---------------------------------------------------------------------------


async def test_an_upload_stores_its_documents_and_starts_an_append_over_them(orch) -> None:
    cid = (await ready(orch)).collection.id
    text = b"Volcanoes erupt when magma rises. " * 60  # 2040 bytes, three chunks
    notes = b"# Notes\n\nSourdough needs a starter."
    response = await upload(
        orch,
        stream(
            header(cid, display_name="handbook", expected_documents=2),
            document("guides/volcanoes.txt", text),
            document("./notes//bread", notes, media_type="text/markdown"),
        ),
    )
    op, source = response.operation, response.source
    assert op.type == operation_pb2.OPERATION_TYPE_APPEND
    assert op.status == operation_pb2.OPERATION_STATUS_PENDING and op.request_id == "up-1"
    assert source.HasField("upload") and source.display_name == "handbook"
    assert op.source_id == source.id and source.collection_id == cid
    assert (response.documents_received, response.bytes_received) == (2, len(text) + len(notes))
    assert list(response.rejected) == []

    [command] = await appends(orch)
    assert command.operation_id == op.id and command.source.id == source.id
    assert command.upload.bucket == UPLOADS_BUCKET
    listed = [
        (d.path, d.media_type, d.size_bytes, d.sha256, d.object_name)
        for d in command.upload.documents
    ]
    assert listed == [
        (
            "guides/volcanoes.txt",
            "text/plain",
            len(text),
            sha(text),
            f"{cid}/{source.id}/{sha(text)}",
        ),
        ("notes/bread", "text/markdown", len(notes), sha(notes), f"{cid}/{source.id}/{sha(notes)}"),
    ]
    for data, uploaded in zip((text, notes), command.upload.documents, strict=True):
        assert await bytes_of(orch, uploaded.object_name, len(data), sha(data)) == data

    got = await orch.collections.GetCollection(
        api.GetCollectionRequest(collection_id=cid), metadata=ALICE
    )
    assert got.collection.status == operation_pb2.COLLECTION_STATUS_PROCESSING
    assert [(s.id, s.display_name) for s in got.collection.sources] == [(source.id, "handbook")]


async def test_a_new_source_without_a_label_is_named_after_its_id(orch) -> None:
    cid = (await ready(orch)).collection.id
    response = await upload(orch, stream(header(cid), document("a.txt", b"alpha")))
    assert response.source.display_name == f"upload-{response.source.id[:8]}"


async def test_unsupported_and_oversized_documents_are_rejected_and_the_rest_goes_on(orch) -> None:
    cid = (await ready(orch)).collection.id
    big = b"x" * (MAX_DOCUMENT_BYTES + 1)
    response = await upload(
        orch,
        stream(
            header(cid),
            document("tool.exe", b"MZ\x90\x00"),
            document("scan.png", b"\x89PNG", media_type="image/png"),
            document("big.txt", big),
            document("kept.md", b"# Kept"),
        ),
    )
    assert [(r.path, r.reason) for r in response.rejected] == [
        ("tool.exe", "UNSUPPORTED_MEDIA_TYPE"),
        ("scan.png", "UNSUPPORTED_MEDIA_TYPE"),
        ("big.txt", "DOCUMENT_TOO_LARGE"),
    ]
    assert all(r.message for r in response.rejected)
    assert response.documents_received == 4
    [command] = await appends(orch)
    assert [d.path for d in command.upload.documents] == ["kept.md"]
    assert not await stored(orch, big)


async def test_an_upload_where_nothing_is_accepted_starts_nothing(orch) -> None:
    cid = (await ready(orch)).collection.id
    refusal = await refused(upload(orch, stream(header(cid), document("tool.exe", b"MZ"))))
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT and refusal.reason == "INVALID_ARGUMENT"
    assert "tool.exe" in refusal.status.message
    await nothing_started(orch)


# --- broken streams -----------------------------------------------------------------------

GOOD = b"good document body"
BROKEN = {
    "chunk before the header": (lambda cid: stream(None, document("a.txt", GOOD)), "a.txt"),
    "sha256 mismatch": (
        lambda cid: stream(header(cid), document("a.txt", GOOD, digest=sha(b"other"))),
        "a.txt",
    ),
    "interleaved documents": (
        lambda cid: [header(cid), *document("a.txt", GOOD * 100)[:1], *document("b.txt", GOOD)],
        "b.txt",
    ),
    "parent path": (lambda cid: stream(header(cid), document("../a.txt", GOOD)), "../a.txt"),
    "absolute path": (lambda cid: stream(header(cid), document("/etc/a.txt", GOOD)), "/etc/a.txt"),
    "no path": (lambda cid: stream(header(cid), document("", GOOD)), ""),
    "second header": (lambda cid: [header(cid), *document("a.txt", GOOD), header(cid)], ""),
    "no last chunk": (lambda cid: [header(cid), *document("a.txt", GOOD * 100)[:-1]], "a.txt"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
async def test_a_broken_stream_is_upload_corrupted_and_starts_nothing(orch, case: str) -> None:
    cid = (await ready(orch)).collection.id
    build, path = BROKEN[case]
    refusal = await refused(upload(orch, build(cid)))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UPLOAD_CORRUPTED")
    assert refusal.metadata == {"path": path}
    await nothing_started(orch)


async def test_more_bytes_than_a_call_may_carry_fail_it_and_start_nothing(orch) -> None:
    cid = (await ready(orch)).collection.id
    documents = [document(f"d{n}.txt", bytes([65 + n]) * 4000) for n in range(5)]  # 20000 bytes
    refusal = await refused(upload(orch, stream(header(cid), *documents)))
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UPLOAD_TOO_LARGE",
    )
    assert refusal.metadata == {"limit_bytes": str(MAX_BYTES)}
    await nothing_started(orch)


# --- the header ---------------------------------------------------------------------------


async def test_the_header_is_checked_before_any_document_is_stored(orch) -> None:
    created = await ready(orch, sources=[directory_source(orch.directory("docs"))])
    cid = created.collection.id
    body = b"checked before it is stored " + uuid.uuid4().bytes

    refusal = await refused(
        upload(orch, stream(header(cid, request_id=""), document("a.txt", body)))
    )
    assert (refusal.reason, refusal.metadata) == (
        "INVALID_ARGUMENT",
        {"field": "header.request_id"},
    )
    refusal = await refused(upload(orch, stream(header(cid), document("a.txt", body)), BOB))
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")
    for source_id in (created.collection.sources[0].id, str(uuid.uuid4())):  # a directory's, none
        refusal = await refused(
            upload(orch, stream(header(cid, source_id=source_id), document("a.txt", body)))
        )
        assert (refusal.reason, refusal.metadata) == ("SOURCE_NOT_FOUND", {"source_id": source_id})

    busy = await orch.collections.AddSource(
        api.AddSourceRequest(
            collection_id=cid, source=directory_source(orch.directory("more")), request_id="add"
        ),
        metadata=ALICE,
    )
    refusal = await refused(upload(orch, stream(header(cid), document("a.txt", body))))
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OPERATION_IN_PROGRESS",
    )
    assert refusal.metadata["active_operation_id"] == busy.operation.id
    assert not await stored(orch, body)
    assert len(await appends(orch)) == 1  # AddSource's only


async def test_a_new_source_may_not_take_the_label_of_another(orch) -> None:
    cid = (await ready(orch)).collection.id
    first = await upload(
        orch, stream(header(cid, "r1", display_name="hb"), document("a.txt", b"a"))
    )
    await orch.finish(first.operation.id, T0)
    refusal = await refused(
        upload(orch, stream(header(cid, "r2", display_name="hb"), document("b.txt", b"b")))
    )
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "SOURCE_ALREADY_EXISTS",
    )
    assert refusal.metadata == {"source_id": first.source.id}


# --- retries and later uploads --------------------------------------------------------------


async def test_a_retry_with_the_same_request_id_returns_the_first_result(orch) -> None:
    cid = (await ready(orch)).collection.id
    requests = stream(header(cid, "same"), document("a.txt", b"alpha"), document("b.md", b"# b"))
    first = await upload(orch, requests)
    while_running = await upload(orch, requests)  # its APPEND still runs: not refused
    assert while_running.operation.id == first.operation.id
    assert while_running.source.id == first.source.id
    await orch.finish(first.operation.id, T0)
    after = await upload(orch, requests)
    assert after.operation.id == first.operation.id
    assert after.operation.status == operation_pb2.OPERATION_STATUS_COMPLETED
    assert len(await appends(orch)) == 1 and await orch.count("sources") == 1

    changed = stream(header(cid, "same"), document("a.txt", b"other"))
    refusal = await refused(upload(orch, changed))
    assert (refusal.reason, refusal.metadata) == ("REQUEST_ID_REUSED", {"request_id": "same"})


async def test_a_later_upload_adds_to_the_source_it_names(orch) -> None:
    cid = (await ready(orch)).collection.id
    first = await upload(orch, stream(header(cid, "u1"), document("a.txt", b"alpha")))
    await orch.finish(first.operation.id, T0)
    sid = first.source.id
    second = await upload(
        orch, stream(header(cid, "u2", source_id=sid), document("b.txt", b"beta"))
    )
    assert second.source.id == sid and second.operation.source_id == sid
    assert await orch.count("sources") == 1
    latest = (await appends(orch))[-1]
    assert latest.source.id == sid
    assert [d.object_name for d in latest.upload.documents] == [f"{cid}/{sid}/{sha(b'beta')}"]


# --- the bucket and the indexer's side of an upload ----------------------------------------


@pytest.fixture
async def bus(private_nats: NatsServer) -> AsyncIterator[JetStream]:
    client = await JetStream.connect(private_nats.url, name="uploads-test", storage="memory")
    yield client
    await client.close()


async def test_the_bucket_is_content_addressed_and_checks_what_it_gives_back(bus) -> None:
    bucket = await ObjectBucket.ensure(bus.js)
    assert (await ObjectBucket.ensure(bus.js)).name == UPLOADS_BUCKET  # idempotent
    data = uuid.uuid4().bytes * 100
    name = f"c/{uuid.uuid4()}/{sha(data)}"
    assert await bucket.put(name, io.BytesIO(data), size=len(data), sha256=sha(data))
    assert not await bucket.put(name, io.BytesIO(data), size=len(data), sha256=sha(data))
    out = io.BytesIO()
    await bucket.fetch_into(name, out, size=len(data), sha256=sha(data))
    assert out.getvalue() == data
    with pytest.raises(ObjectUnreadable):
        await bucket.fetch_into(name, io.BytesIO(), size=len(data), sha256=sha(b"other"))
    with pytest.raises(ObjectUnreadable):
        await bucket.fetch_into(f"c/missing/{sha(b'x')}", io.BytesIO(), size=1, sha256=sha(b"x"))


async def embed(model: str, texts: list[str], *, instruction: str | None = None) -> list:
    """The hashing model's own algorithm in-process (what Triton runs for it)."""
    assert model == "vectorops/hash-bow-384"
    return list(hash_embed(texts))


@pytest.fixture
async def indexer_repo(database: str) -> AsyncIterator[DocumentRepository]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, "indexer", load_migrations("kit") + load_migrations("indexer"))
    yield DocumentRepository(pool, "indexer")
    await pool.close()


async def test_the_indexer_ingests_exactly_the_manifest_and_fails_unreadable_objects_alone(
    bus, indexer_repo: DocumentRepository, tmp_path
) -> None:
    bucket = await ObjectBucket.ensure(bus.js)
    cid, sid = str(uuid.uuid4()), str(uuid.uuid4())
    collection = IndexerCollection(
        collection_id=cid,
        owner_id="alice",
        alias_name=f"vo_{uuid.UUID(cid).hex}",
        physical_collection=f"vo_{uuid.UUID(cid).hex}_g1",
        generation=1,
        config={"embedding_model": "vectorops/hash-bow-384", "chunk_size": 24, "chunk_overlap": 4},
    )
    source = IndexerSource(source_id=sid, collection_id=cid, kind="upload", path="handbook")
    await indexer_repo.upsert_collection(collection)
    await indexer_repo.add_source(source)
    bodies = {
        "a.txt": b"Glaciers carve fjords near Tromso. " * 20,
        "README": b"# Kettles\n\nCopper kettles brew cardamom tea at dawn.",
        "gone.txt": b"this object was never stored",
        "swapped.txt": b"the bytes its name promises",
    }
    types = {"README": "text/markdown"}
    for path in ("a.txt", "README"):
        data = bodies[path]
        name = f"{cid}/{sid}/{sha(data)}"
        await bucket.put(name, io.BytesIO(data), size=len(data), sha256=sha(data))
    store_raw = await bus.js.object_store(UPLOADS_BUCKET)
    await store_raw.put(f"{cid}/{sid}/{sha(bodies['swapped.txt'])}", b"other bytes altogether")

    def manifest(*paths: str) -> UploadManifest:
        return UploadManifest(
            UPLOADS_BUCKET,
            tuple(
                ManifestDocument(
                    path,
                    types.get(path, "text/plain"),
                    len(bodies[path]),
                    sha(bodies[path]),
                    f"{cid}/{sid}/{sha(bodies[path])}",
                )
                for path in paths
            ),
        )

    store = EdgeVectorStore(tmp_path / "vectors")
    try:
        ingestor = Ingestor(indexer_repo, store, embed, batch_chunks=8)
        first = await ingestor.ingest_upload(
            collection, source, manifest(*bodies), bucket, str(uuid.uuid4())
        )
        assert (first.documents_total, first.documents_indexed) == (4, 2)
        assert sorted((f.path, f.reason) for f in first.failures) == [
            ("gone.txt", "UNREADABLE"),
            ("swapped.txt", "UNREADABLE"),
        ]
        records = {d.path: d for d in await indexer_repo.documents_of_source(cid, sid)}
        assert records["gone.txt"].status is DocumentStatus.FAILED
        assert records["README"].media_type == "text/markdown"
        assert records["a.txt"].chunk_count > 1
        points = await store.count(collection.physical_collection)
        assert points == records["a.txt"].chunk_count + records["README"].chunk_count

        # A later upload of a.txt alone: skipped, and README stays with its points.
        again = await ingestor.ingest_upload(
            collection, source, manifest("a.txt"), bucket, str(uuid.uuid4())
        )
        assert (again.documents_skipped, again.vectors_written) == (1, 0)
        assert again.documents_removed == 0
        after = {d.path: d for d in await indexer_repo.documents_of_source(cid, sid)}
        assert after["a.txt"].status is DocumentStatus.SKIPPED_UNCHANGED
        assert after["README"].status is DocumentStatus.INDEXED
        assert await store.count(collection.physical_collection) == points
    finally:
        await store.close()


# --- end to end, through the stack ----------------------------------------------------------

VOLCANOES = (
    b"Volcanoes erupt when molten magma rises through cracks in the crust; lava, ash and "
    b"volcanic gases pour out of the crater and the lava cools into basalt."
)
SOURDOUGH = (
    b"# Sourdough\n\nA sourdough starter of flour and water ferments with wild yeast. Fold "
    b"the dough, proof it overnight and bake the loaf in a hot oven."
)
ESPRESSO = (
    b"# Espresso\n\nEspresso forces hot water at high pressure through finely ground coffee "
    b"beans; the crema sits on top of the small strong cup."
)
BEES = docx_bytes(
    "Honey bees",
    ["Honey bees perform a waggle dance to tell the hive where nectar flowers grow."],
)


def upload_sync(client: Client, requests: list[Request]) -> api.UploadDocumentsResponse:
    return client.collections.UploadDocuments(iter(requests), metadata=client.metadata, timeout=60)


def top_path(client: Client, collection_id: str, query: str) -> tuple[str, str]:
    hits = client.search(collection_id, query).hits
    assert hits, query
    return hits[0].path, hits[0].source_id


@pytest.mark.integration
def test_uploaded_documents_are_indexed_searched_and_replaced_by_a_later_upload(stack) -> None:
    client = Client(stack, stack.tokens.clear["user"])
    try:
        created = client.create(f"uploads-{uuid.uuid4().hex[:6]}", config())
        client.finish(created.operation.id)
        cid = created.collection.id

        first = upload_sync(
            client,
            stream(
                header(cid, str(uuid.uuid4()), display_name="handbook"),
                document("volcanoes.txt", VOLCANOES, piece=64),
                document("notes/bread", SOURDOUGH, media_type="text/markdown"),
                document("bees.docx", BEES),
                document("setup.exe", b"MZ\x90\x00"),
            ),
        )
        assert [(r.path, r.reason) for r in first.rejected] == [
            ("setup.exe", "UNSUPPORTED_MEDIA_TYPE")
        ]
        done = client.finish(first.operation.id)
        assert done.progress.documents_done == 3 and done.progress.documents_failed == 0
        sid = first.source.id
        assert top_path(client, cid, "magma lava crater eruption") == ("volcanoes.txt", sid)
        assert top_path(client, cid, "sourdough starter wild yeast") == ("notes/bread", sid)
        assert top_path(client, cid, "waggle dance of honey bees") == ("bees.docx", sid)
        before = {d.path: d for d in client.list_documents(cid, sid)}
        assert set(before) == {"volcanoes.txt", "notes/bread", "bees.docx"}
        assert all(d.chunk_count >= 1 for d in before.values())
        assert before["notes/bread"].media_type == "text/markdown"  # declared, no extension

        # Same source: one unchanged, one changed; bees.docx is not sent and stays.
        second = upload_sync(
            client,
            stream(
                header(cid, str(uuid.uuid4()), source_id=sid),
                document("volcanoes.txt", VOLCANOES),
                document("notes/bread", ESPRESSO, media_type="text/markdown"),
            ),
        )
        assert second.source.id == sid
        redone = client.finish(second.operation.id)
        assert redone.progress.documents_skipped == 1
        after = {d.path: d for d in client.list_documents(cid, sid)}
        assert set(after) == {"volcanoes.txt", "notes/bread", "bees.docx"}
        assert (
            redone.progress.vectors_written == after["notes/bread"].chunk_count
        )  # none for the unchanged
        assert after["notes/bread"].content_sha256 == sha(ESPRESSO)
        assert top_path(client, cid, "espresso crema coffee beans") == ("notes/bread", sid)
        sourdough_hits = client.search(cid, "sourdough starter wild yeast", top_k=20).hits
        assert not any("sourdough" in hit.text.lower() for hit in sourdough_hits)
        assert top_path(client, cid, "waggle dance of honey bees") == ("bees.docx", sid)
        collection = client.get(cid)
        assert collection.document_count == 3
        assert collection.vector_count == sum(d.chunk_count for d in after.values())
    finally:
        client.close()


@pytest.mark.integration
def test_a_broken_upload_through_the_stack_starts_nothing(stack) -> None:
    client = Client(stack, stack.tokens.clear["user"])
    try:
        created = client.create(f"uploads-{uuid.uuid4().hex[:6]}", config())
        client.finish(created.operation.id)
        cid = created.collection.id
        with pytest.raises(grpc.RpcError) as caught:
            upload_sync(
                client,
                stream(header(cid, str(uuid.uuid4())), document("a.txt", GOOD, digest="0" * 64)),
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(caught.value) == "UPLOAD_CORRUPTED"
        collection = client.get(cid)
        assert list(collection.sources) == [] and collection.active_operation_id == ""
    finally:
        client.close()
