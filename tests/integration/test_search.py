"""The indexer's SearchService and DocumentService over gRPC, in-process, on real
parts: Postgres for the indexer's copy of collections and documents, Qdrant's
embedded engine in a temp dir for the points, and the real embedder (its gRPC
servicer in-process over the session's Triton) both to write the points and to
embed the queries. Callers are a user, another user and an admin, by token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg
import grpc
import pytest

from embedder.adapters.triton_client import TritonClient
from embedder.embedding import Embedder, Limits, Priority
from embedder.servicer import EmbedderServicer
from indexer.adapters.document_repository import (
    CollectionRecord,
    DocumentRecord,
    DocumentRepository,
    DocumentStatus,
    SourceRecord,
)
from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.embedder_client import EmbedderClient, QueryEmbeddings
from indexer.adapters.vector_store import Distance, VectorPoint
from indexer.document_servicer import DocumentServicer
from indexer.domain.documents import document_id, point_id
from indexer.search import Searcher
from indexer.search_servicer import SearchServicer
from kit.auth import Principal, Role, TokenAuthenticator, digest
from kit.config import ServiceName
from kit.db.migrations import load_migrations, migrate
from kit.embedding_models import ModelRegistry
from kit.grpc.server import RunningServer, bind, create_server
from kit.grpc.status import error_info, status_from_rpc_error
from vectorops.embedder.v1 import embedder_service_pb2_grpc
from vectorops.indexer.v1 import (
    document_service_pb2,
    document_service_pb2_grpc,
    indexer_pb2,
    search_service_pb2,
    search_service_pb2_grpc,
)

HASH = "vectorops/hash-bow-384"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOP_K = 12  # small, so the cap shows with a small corpus
TOKENS = {
    "alice": Principal("alice", Role.USER),
    "bob": Principal("bob", Role.USER),
    "root": Principal("ops", Role.ADMIN),
    "indexer": Principal("indexer", Role.SERVICE),
}

GLACIERS = "Glaciers carve deep fjords along the Norwegian coast near Tromso."
ALPS = "Glaciers retreat in the Alps as the summers grow warmer."
KETTLES = "Copper kettles brew cardamom tea at dawn in the mountain village."
BASALT = "Volcanic basalt columns stand along the Icelandic shore."
TURBINES = "Tidal turbines generate power off the Orkney coast."
FILLERS = [f"Filler note {i} records parcel number {i * 7} for the archive." for i in range(9)]
REVENUE = "Quarterly revenue grew by twelve percent on strong subscription sales."
MINILM_TEXTS = [
    "The cat sat on the mat.",
    REVENUE,
    "Postgres keeps the state and NATS carries the events.",
    "Blue-green reindexing switches collections atomically.",
]


def auth(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {name}-token"),)


def reason_of(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    status = status_from_rpc_error(error)
    assert status is not None, error
    info = error_info(status)
    assert info is not None and info.domain == "vectorops.dev"
    return error.code(), info.reason, dict(info.metadata)


@dataclass
class Corpus:
    """A collection as the tests built it: its copy, sources and documents."""

    record: CollectionRecord
    sources: list[str]
    documents: dict[str, DocumentRecord] = field(default_factory=dict)  # path → record

    @property
    def id(self) -> str:
        return self.record.collection_id

    def doc_id(self, path: str) -> str:
        return self.documents[path].document_id


class CountingEmbedder:
    """The real embedder client, counting the Embed calls a search makes."""

    def __init__(self, client: EmbedderClient) -> None:
        self._client = client
        self.calls: list[tuple[str, str | None]] = []

    async def embed_queries(self, model: str, texts: Sequence[str], **options) -> QueryEmbeddings:
        self.calls.append((model, options.get("instruction")))
        return await self._client.embed_queries(model, texts, **options)


def _authenticator() -> TokenAuthenticator:
    return TokenAuthenticator((digest(f"{name}-token"), p) for name, p in TOKENS.items())


@pytest.fixture(scope="module")
async def embedder(triton_client: TritonClient) -> Embedder:
    limits = Limits(
        max_texts=256,
        max_request_chars=2_000_000,
        max_in_flight_bulk=4,
        max_in_flight_queries=4,
        query_queue_seconds=5.0,
        triton_timeout_seconds=30.0,
    )
    return Embedder(ModelRegistry(), triton_client, limits)


async def _embedder_server(embedder: Embedder) -> RunningServer:
    binding = bind(embedder_service_pb2_grpc, "EmbedderService", EmbedderServicer(embedder))
    running = await create_server("127.0.0.1", 0, [binding], _authenticator())
    await running.set_serving()
    return running


@pytest.fixture(scope="module")
async def embedder_address(embedder: Embedder) -> AsyncIterator[str]:
    running = await _embedder_server(embedder)
    yield f"127.0.0.1:{running.port}"
    await running.server.stop(0)


@pytest.fixture(scope="module")
async def repository(postgres) -> AsyncIterator[DocumentRepository]:
    dsn = postgres.create_database(f"search_{uuid.uuid4().hex[:8]}")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, "indexer", load_migrations("kit") + load_migrations("indexer"))
    yield DocumentRepository(pool, "indexer")
    await pool.close()


@pytest.fixture(scope="module")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EdgeVectorStore]:
    vector_store = EdgeVectorStore(tmp_path_factory.mktemp("search") / "vectors")
    yield vector_store
    await vector_store.close()


class Builder:
    """Collections the way the indexer leaves them: a copy in Postgres, documents
    recorded, points written with document vectors from the real embedder, and
    (when live) the alias on the physical collection."""

    def __init__(self, repo: DocumentRepository, store: EdgeVectorStore, embedder: Embedder):
        self.repo, self.store, self.embedder = repo, store, embedder

    async def collection(
        self, owner: str, model: str, sources: int = 1, instruction: str | None = None
    ) -> Corpus:
        cid = str(uuid.uuid4())
        config: dict[str, object] = {"embedding_model": model, "dimension": 384}
        if instruction is not None:
            config["instruction"] = instruction
        record = CollectionRecord(
            collection_id=cid,
            owner_id=owner,
            alias_name=f"vo_{uuid.UUID(cid).hex}",
            physical_collection=f"vo_{uuid.UUID(cid).hex}_g1",
            generation=3,
            config=config,
        )
        await self.repo.upsert_collection(record)
        source_ids = [str(uuid.uuid4()) for _ in range(sources)]
        for sid in source_ids:
            await self.repo.add_source(SourceRecord(sid, cid, "directory", f"/data/{sid[:8]}"))
        return Corpus(record, source_ids)

    async def documents(
        self,
        corpus: Corpus,
        source: int,
        texts: dict[str, list[str]],  # path → chunk texts
        *,
        physical: str | None = None,
        status: DocumentStatus = DocumentStatus.INDEXED,
        duplicate_of: str | None = None,
    ) -> None:
        sid = corpus.sources[source]
        name = physical or corpus.record.physical_collection
        model = str(corpus.record.config["embedding_model"])
        await self.store.create_collection(name, 384, Distance.COSINE)
        points: list[VectorPoint] = []
        for path, chunks in texts.items():
            doc = document_id(corpus.id, sid, path)
            outcome = await self.embedder.embed(
                model, chunks, is_query=False, priority=Priority.BULK, path="test_search"
            )
            for index, chunk in enumerate(chunks):
                payload = {
                    "collection_id": corpus.id,
                    "source_id": sid,
                    "document_id": doc,
                    "chunk_index": index,
                    "text": chunk,
                    "page": 2 if path.endswith(".pdf") else None,
                    "path": path,
                    "content_hash": f"sha-{path}",
                }
                points.append(
                    VectorPoint(point_id(doc, index), outcome.vectors[index].vector, payload)
                )
            record = DocumentRecord(
                document_id=doc,
                collection_id=corpus.id,
                source_id=sid,
                path=path,
                content_hash=f"{len(path):064x}",
                status=status,
                media_type="text/plain",
                chunk_count=len(chunks),
                vector_count=len(chunks),
                bytes=sum(len(chunk) for chunk in chunks),
                duplicate_of=duplicate_of,
                last_operation_id=str(uuid.uuid4()),
            )
            await self.repo.record_document(record)
            corpus.documents[path] = record
        await self.store.upsert(name, points)

    async def failed(self, corpus: Corpus, source: int, path: str) -> None:
        record = DocumentRecord(
            document_id=document_id(corpus.id, corpus.sources[source], path),
            collection_id=corpus.id,
            source_id=corpus.sources[source],
            path=path,
            content_hash="0" * 64,
            status=DocumentStatus.FAILED,
            failure_reason="CORRUPT_DOCUMENT",
            failure_message="cannot parse /home/alice/docs/broken.pdf",
        )
        await self.repo.record_document(record)
        corpus.documents[path] = record

    async def go_live(self, corpus: Corpus) -> None:
        await self.store.set_alias(corpus.record.alias_name, corpus.record.physical_collection)


@dataclass
class World:
    alice_hash: Corpus  # two sources, many documents, every document status
    alice_minilm: Corpus
    alice_second_hash: Corpus
    alice_pending: Corpus  # no alias: nothing live
    bob_hash: Corpus
    builder: Builder


@pytest.fixture(scope="module")
async def world(repository, store, embedder) -> World:
    build = Builder(repository, store, embedder)
    main = await build.collection("alice", HASH, sources=2)
    await build.documents(main, 0, {"glaciers.txt": [GLACIERS]})
    await build.documents(main, 0, {"kettles.md": [KETTLES], "basalt.html": [BASALT]})
    await build.documents(main, 0, {"turbines.pdf": [TURBINES, f"{TURBINES} Second page."]})
    await build.documents(main, 0, {f"note-{i}.txt": [t] for i, t in enumerate(FILLERS)})
    await build.documents(main, 1, {"alps.txt": [ALPS]})
    await build.documents(
        main, 1, {"unchanged.txt": [KETTLES + " Again."]}, status=DocumentStatus.SKIPPED_UNCHANGED
    )
    await build.documents(
        main,
        1,
        {"copy-of-glaciers.txt": [GLACIERS]},
        status=DocumentStatus.DUPLICATE,
        duplicate_of=main.doc_id("glaciers.txt"),
    )
    await build.failed(main, 1, "broken.pdf")
    await build.go_live(main)

    minilm = await build.collection("alice", MINILM)
    await build.documents(minilm, 0, {f"m{i}.txt": [t] for i, t in enumerate(MINILM_TEXTS)})
    await build.go_live(minilm)

    second = await build.collection("alice", HASH)
    await build.documents(second, 0, {"fjords.txt": [GLACIERS + " Fjords and glaciers."]})
    await build.go_live(second)

    pending = await build.collection("alice", HASH)
    await build.documents(pending, 0, {"half.txt": [GLACIERS]})  # written, never made live

    bob = await build.collection("bob", HASH)
    await build.documents(bob, 0, {"bob.txt": [GLACIERS]})
    await build.go_live(bob)
    return World(main, minilm, second, pending, bob, build)


@dataclass
class Indexer:
    search: search_service_pb2_grpc.SearchServiceStub
    documents: document_service_pb2_grpc.DocumentServiceStub
    embedder: CountingEmbedder


async def _indexer_server(
    repository: DocumentRepository, store: EdgeVectorStore, client: EmbedderClient
) -> tuple[RunningServer, grpc.aio.Channel, Indexer]:
    counting = CountingEmbedder(client)
    searcher = Searcher(repository, store, counting, timeout_seconds=10)
    servicer = SearchServicer(searcher, max_top_k=MAX_TOP_K, max_collections=20)
    running = await create_server(
        "127.0.0.1",
        0,
        [
            bind(search_service_pb2_grpc, "SearchService", servicer),
            bind(document_service_pb2_grpc, "DocumentService", DocumentServicer(repository)),
        ],
        _authenticator(),
    )
    await running.set_serving()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stubs = Indexer(
        search_service_pb2_grpc.SearchServiceStub(channel),
        document_service_pb2_grpc.DocumentServiceStub(channel),
        counting,
    )
    return running, channel, stubs


@pytest.fixture(scope="module")
async def indexer(repository, store, embedder_address, world) -> AsyncIterator[Indexer]:
    client = EmbedderClient(embedder_address, "indexer-token", timeout_seconds=10)
    running, channel, stubs = await _indexer_server(repository, store, client)
    yield stubs
    await channel.close()
    await running.server.stop(0)
    await client.close()


async def search(
    indexer: Indexer,
    who: str,
    collection: Corpus | str,
    query: str,
    timeout: float | None = 30,
    **fields,
):
    cid = collection if isinstance(collection, str) else collection.id
    request = search_service_pb2.SearchRequest(collection_id=cid, query=query, **fields)
    return await indexer.search.Search(request, metadata=auth(who), timeout=timeout)


async def search_multi(indexer: Indexer, who: str, ids: Sequence[str], query: str, **fields):
    request = search_service_pb2.SearchMultiRequest(collection_ids=ids, query=query, **fields)
    return await indexer.search.SearchMulti(request, metadata=auth(who), timeout=30)


# --- Search ------------------------------------------------------------------------


async def test_the_right_document_comes_first_with_its_payload(indexer, world) -> None:
    main = world.alice_hash
    reply = await search(indexer, "alice", main, "glaciers carve fjords Norwegian coast")
    top = reply.hits[0]
    assert top.document_id in {main.doc_id("glaciers.txt"), main.doc_id("copy-of-glaciers.txt")}
    assert {reply.hits[0].path, reply.hits[1].path} == {"glaciers.txt", "copy-of-glaciers.txt"}
    assert top.collection_id == main.id and top.chunk_index == 0
    assert top.source_id == main.documents[top.path].source_id
    assert top.text == ""  # not asked for
    assert top.metadata["content_hash"] == f"sha-{top.path}"
    assert reply.embedding_model == HASH
    assert reply.generation == 3
    assert reply.took.ToNanoseconds() > 0
    scores = [hit.score for hit in reply.hits]
    assert scores == sorted(scores, reverse=True) and len(scores) == 10  # the default top_k

    with_text = await search(indexer, "alice", main, "tidal turbines Orkney", with_text=True)
    assert with_text.hits[0].path == "turbines.pdf" and with_text.hits[0].page == 2
    assert with_text.hits[0].text.startswith(TURBINES)
    assert all(hit.HasField("page") == hit.path.endswith(".pdf") for hit in with_text.hits)


async def test_minilm_finds_the_document_a_question_is_about(indexer, world) -> None:
    # No word in common with the answer: only a real sentence model finds it.
    question = "How much did the company's income increase?"
    # No deadline on this call: the embedder client's own timeout applies.
    reply = await search(indexer, "alice", world.alice_minilm, question, None, with_text=True)
    assert reply.embedding_model == MINILM
    assert reply.hits[0].text == REVENUE


async def test_filter_by_source_and_by_document(indexer, world) -> None:
    main = world.alice_hash
    second_source = main.sources[1]
    reply = await search(
        indexer,
        "alice",
        main,
        "glaciers",
        filter=indexer_pb2.SearchFilter(source_ids=[second_source]),
    )
    assert reply.hits and {hit.source_id for hit in reply.hits} == {second_source}
    assert reply.hits[0].path in {"alps.txt", "copy-of-glaciers.txt"}
    wanted = [main.doc_id("basalt.html"), main.doc_id("turbines.pdf")]
    only = await search(
        indexer, "alice", main, "glaciers", filter=indexer_pb2.SearchFilter(document_ids=wanted)
    )
    assert {hit.document_id for hit in only.hits} == set(wanted)
    assert len(only.hits) == 3  # turbines.pdf has two chunks


async def test_top_k_and_score_threshold(indexer, world) -> None:
    main = world.alice_hash
    assert len((await search(indexer, "alice", main, "glaciers", top_k=2)).hits) == 2
    capped = await search(indexer, "alice", main, "glaciers", top_k=10_000)
    assert len(capped.hits) == MAX_TOP_K  # the collection holds more points than that
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(indexer, "alice", main, "glaciers", top_k=-1)
    assert reason_of(error.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        {"field": "top_k"},
    )
    every = await search(indexer, "alice", main, "glaciers fjords", top_k=MAX_TOP_K)
    # Halfway between two distinct scores, so no hit sits on the threshold itself.
    scores = [hit.score for hit in every.hits]
    threshold = (scores[0] + next(score for score in scores if score < scores[0])) / 2
    kept = await search(
        indexer, "alice", main, "glaciers fjords", top_k=MAX_TOP_K, score_threshold=threshold
    )
    expected = [hit.document_id for hit in every.hits if hit.score >= threshold]
    assert 0 < len(expected) < len(every.hits)
    assert [hit.document_id for hit in kept.hits] == expected


@pytest.mark.parametrize("query", ["", "   "])
async def test_blank_query_is_invalid(indexer, world, query: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(indexer, "alice", world.alice_hash, query)
    assert reason_of(error.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert reason_of(error.value)[2]["field"] == "query"


async def test_a_collection_with_nothing_live_is_not_searchable(indexer, world) -> None:
    pending = world.alice_pending
    indexer.embedder.calls.clear()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(indexer, "alice", pending, "glaciers")
    code, reason, metadata = reason_of(error.value)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "COLLECTION_NOT_SEARCHABLE")
    assert metadata["collection_id"] == pending.id and metadata["status"]
    assert indexer.embedder.calls == []  # refused before any embedding work


@pytest.mark.parametrize("target", ["bob", "unknown", "malformed"])
async def test_another_users_or_unknown_collection_is_not_found(indexer, world, target) -> None:
    cid = {"bob": world.bob_hash.id, "unknown": str(uuid.uuid4()), "malformed": "nope"}[target]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(indexer, "alice", cid, "glaciers")
    assert reason_of(error.value) == (
        grpc.StatusCode.NOT_FOUND,
        "COLLECTION_NOT_FOUND",
        {"collection_id": cid},
    )


async def test_admin_and_service_search_any_collection(indexer, world) -> None:
    for who in ("root", "indexer", "bob"):
        reply = await search(indexer, who, world.bob_hash, "glaciers")
        assert [hit.path for hit in reply.hits] == ["bob.txt"]


async def test_search_goes_through_the_alias_so_a_switch_moves_it(indexer, world) -> None:
    """A reindex builds a new physical collection and moves the alias: the next
    search answers from the new one, never from a name the search picked itself."""
    build = world.builder
    corpus = await build.collection("alice", HASH)
    await build.documents(corpus, 0, {"old.txt": ["Old generation text about glaciers."]})
    await build.go_live(corpus)
    first = await search(indexer, "alice", corpus, "glaciers")
    assert [hit.path for hit in first.hits] == ["old.txt"]
    staging = f"{corpus.record.physical_collection}_staging"
    await build.documents(
        corpus, 0, {"new.txt": ["New generation about glaciers."]}, physical=staging
    )
    await build.store.set_alias(corpus.record.alias_name, staging)
    second = await search(indexer, "alice", corpus, "glaciers")
    assert [hit.path for hit in second.hits] == ["new.txt"]
    # A DELETE removes the alias first: from then on nothing is searchable.
    await build.store.delete_alias(corpus.record.alias_name)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(indexer, "alice", corpus, "glaciers")
    assert reason_of(error.value)[1] == "COLLECTION_NOT_SEARCHABLE"


async def test_a_model_the_embedder_does_not_serve_is_named(indexer, world) -> None:
    build = world.builder
    corpus = await build.collection("alice", "retired/model-v0")
    await build.store.create_collection(corpus.record.physical_collection, 384, Distance.COSINE)
    await build.go_live(corpus)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(indexer, "alice", corpus, "glaciers")
    assert reason_of(error.value) == (
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_MODEL",
        {"model": "retired/model-v0"},
    )


# --- SearchMulti -------------------------------------------------------------------


async def test_multi_skips_unknown_foreign_and_not_live_collections(indexer, world) -> None:
    unknown = str(uuid.uuid4())
    ids = [world.alice_hash.id, world.alice_pending.id, unknown, world.bob_hash.id]
    reply = await search_multi(indexer, "alice", ids, "glaciers fjords", top_k=5)
    assert len(reply.hits) == 5
    assert {hit.collection_id for hit in reply.hits} == {world.alice_hash.id}
    skipped = {s.collection_id: s.reason for s in reply.skipped}
    assert skipped == {
        world.alice_pending.id: "COLLECTION_NOT_SEARCHABLE",
        unknown: "COLLECTION_NOT_FOUND",
        world.bob_hash.id: "COLLECTION_NOT_FOUND",
    }
    assert all(s.message for s in reply.skipped)
    assert reply.took.ToNanoseconds() > 0


async def test_multi_with_every_collection_skipped_is_ok_and_empty(indexer, world) -> None:
    ids = [world.alice_pending.id, str(uuid.uuid4())]
    reply = await search_multi(indexer, "alice", ids, "glaciers")
    assert list(reply.hits) == [] and len(reply.skipped) == 2


async def test_multi_merges_models_embedding_once_per_model(indexer, world) -> None:
    ids = [world.alice_hash.id, world.alice_minilm.id, world.alice_second_hash.id]
    query = "glaciers and fjords"
    indexer.embedder.calls.clear()
    reply = await search_multi(indexer, "alice", [*ids, ids[0]], query, top_k=4, with_text=True)
    # Two hashing collections and one MiniLM one: two query embeddings, not three.
    assert sorted(indexer.embedder.calls) == sorted([(HASH, None), (MINILM, None)])
    assert len(reply.hits) == 4
    assert len({(h.collection_id, h.document_id, h.chunk_index) for h in reply.hits}) == 4
    assert all(hit.text for hit in reply.hits)
    by_collection = {cid: [h for h in reply.hits if h.collection_id == cid] for cid in ids}
    own = {cid: (await search(indexer, "alice", cid, query, top_k=4)).hits for cid in ids}
    # MiniLM's scores for this query are near 0 while the hashing model's reach
    # 0.3-0.7: by raw score MiniLM would not place at all. Normalised, each
    # collection's best hit competes on the same scale.
    assert own[world.alice_minilm.id][0].score < own[world.alice_hash.id][2].score
    for cid in ids:
        assert by_collection[cid], cid
        # Within a collection the merge keeps the collection's own order.
        merged_keys = [(h.document_id, h.chunk_index) for h in by_collection[cid]]
        own_keys = [(h.document_id, h.chunk_index) for h in own[cid]]
        assert merged_keys == own_keys[: len(merged_keys)]
        # Scores stay those of the collection's own model.
        assert [h.score for h in by_collection[cid]] == [h.score for h in own[cid]][
            : len(merged_keys)
        ]


async def test_multi_refuses_too_many_or_no_collections(indexer, world) -> None:
    for ids in ([str(uuid.uuid4()) for _ in range(21)], []):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await search_multi(indexer, "alice", ids, "glaciers")
        assert reason_of(error.value) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            {"field": "collection_ids"},
        )
    # Twenty distinct ids, repeated, are twenty: duplicates collapse before the limit.
    ids = [str(uuid.uuid4()) for _ in range(20)]
    reply = await search_multi(indexer, "alice", ids + ids, "glaciers")
    assert len(reply.skipped) == 20


# --- the embedder down -------------------------------------------------------------


async def test_embedder_down_is_unavailable_with_reason(repository, store, embedder, world) -> None:
    own_embedder = await _embedder_server(embedder)
    client = EmbedderClient(f"127.0.0.1:{own_embedder.port}", "indexer-token", timeout_seconds=5)
    running, channel, stubs = await _indexer_server(repository, store, client)
    try:
        reply = await search(stubs, "alice", world.alice_hash, "glaciers")
        assert reply.hits
        await own_embedder.server.stop(0)
        for call in (
            search(stubs, "alice", world.alice_hash, "glaciers"),
            search_multi(stubs, "alice", [world.alice_hash.id], "glaciers"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert reason_of(error.value) == (
                grpc.StatusCode.UNAVAILABLE,
                "EMBEDDER_UNAVAILABLE",
                {},
            )
    finally:
        await channel.close()
        await running.server.stop(0)
        await client.close()
        await own_embedder.server.stop(0)


# --- DocumentService ---------------------------------------------------------------


async def get_document(indexer: Indexer, who: str, cid: str, did: str) -> indexer_pb2.Document:
    request = document_service_pb2.GetDocumentRequest(collection_id=cid, document_id=did)
    reply = await indexer.documents.GetDocument(request, metadata=auth(who), timeout=30)
    return reply.document


async def list_all(indexer: Indexer, who: str, cid: str, page_size: int, **filters):
    """Every page of ListDocuments; the documents and the number of pages."""
    documents: list[indexer_pb2.Document] = []
    token, pages = "", 0
    while True:
        request = document_service_pb2.ListDocumentsRequest(
            collection_id=cid, page_size=page_size, page_token=token, **filters
        )
        reply = await indexer.documents.ListDocuments(request, metadata=auth(who), timeout=30)
        documents += reply.documents
        pages += 1
        token = reply.next_page_token
        if not token:
            return documents, pages


async def test_get_document_maps_fields_and_statuses(indexer, world) -> None:
    main = world.alice_hash
    glaciers = await get_document(indexer, "alice", main.id, main.doc_id("glaciers.txt"))
    record = main.documents["glaciers.txt"]
    assert (glaciers.id, glaciers.collection_id, glaciers.source_id) == (
        record.document_id,
        main.id,
        main.sources[0],
    )
    assert glaciers.path == "glaciers.txt" and glaciers.media_type == "text/plain"
    assert glaciers.size_bytes == len(GLACIERS) and glaciers.chunk_count == 1
    assert glaciers.content_sha256 == record.content_hash
    assert glaciers.last_operation_id == record.last_operation_id
    assert glaciers.status == indexer_pb2.DOCUMENT_STATUS_COMPLETED
    assert glaciers.failure_reason == ""
    assert glaciers.create_time.seconds > 0 and glaciers.update_time.seconds > 0

    statuses = {
        "unchanged.txt": indexer_pb2.DOCUMENT_STATUS_COMPLETED,
        "copy-of-glaciers.txt": indexer_pb2.DOCUMENT_STATUS_DUPLICATE,
        "broken.pdf": indexer_pb2.DOCUMENT_STATUS_FAILED,
    }
    got = {p: await get_document(indexer, "alice", main.id, main.doc_id(p)) for p in statuses}
    assert {p: d.status for p, d in got.items()} == statuses
    assert got["copy-of-glaciers.txt"].failure_reason.endswith(main.doc_id("glaciers.txt"))
    failed = got["broken.pdf"].failure_reason
    assert failed.startswith("CORRUPT_DOCUMENT: ") and "/home/alice" not in failed


async def test_get_document_not_found_cases(indexer, world) -> None:
    main, bob = world.alice_hash, world.bob_hash
    cases = [
        ("alice", main.id, str(uuid.uuid4()), "DOCUMENT_NOT_FOUND"),
        ("alice", main.id, "not-a-uuid", "DOCUMENT_NOT_FOUND"),
        # A document of another collection is not this collection's.
        ("alice", main.id, bob.doc_id("bob.txt"), "DOCUMENT_NOT_FOUND"),
        ("alice", bob.id, bob.doc_id("bob.txt"), "COLLECTION_NOT_FOUND"),
        ("alice", str(uuid.uuid4()), main.doc_id("glaciers.txt"), "COLLECTION_NOT_FOUND"),
    ]
    for who, cid, did, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await get_document(indexer, who, cid, did)
        code, got, metadata = reason_of(error.value)
        assert (code, got) == (grpc.StatusCode.NOT_FOUND, reason), (cid, did)
        key = "document_id" if reason == "DOCUMENT_NOT_FOUND" else "collection_id"
        assert metadata[key] == (did if key == "document_id" else cid)
    admin_view = await get_document(indexer, "root", bob.id, bob.doc_id("bob.txt"))
    assert admin_view.path == "bob.txt"


async def test_list_documents_pages_through_everything_once(indexer, world) -> None:
    main = world.alice_hash
    listed, pages = await list_all(indexer, "alice", main.id, page_size=4)
    assert sorted(d.path for d in listed) == sorted(main.documents)
    assert len({d.id for d in listed}) == len(main.documents) == 17
    assert pages == 5
    keys = [(d.source_id, d.path) for d in listed]
    assert keys == sorted(keys)
    one_page, pages = await list_all(indexer, "alice", main.id, page_size=0)
    assert len(one_page) == 17 and pages == 1  # 0 means the default, 100


async def test_list_documents_filters_by_status_and_source(indexer, world) -> None:
    main = world.alice_hash
    completed, _ = await list_all(
        indexer, "alice", main.id, 5, statuses=[indexer_pb2.DOCUMENT_STATUS_COMPLETED]
    )
    assert "unchanged.txt" in {d.path for d in completed}
    assert {d.status for d in completed} == {indexer_pb2.DOCUMENT_STATUS_COMPLETED}
    assert len(completed) == 15  # all but the duplicate and the failed one
    problems, _ = await list_all(
        indexer,
        "alice",
        main.id,
        5,
        statuses=[indexer_pb2.DOCUMENT_STATUS_FAILED, indexer_pb2.DOCUMENT_STATUS_DUPLICATE],
    )
    assert sorted(d.path for d in problems) == ["broken.pdf", "copy-of-glaciers.txt"]
    pending, _ = await list_all(
        indexer, "alice", main.id, 5, statuses=[indexer_pb2.DOCUMENT_STATUS_PENDING]
    )
    assert pending == []
    of_second, _ = await list_all(indexer, "alice", main.id, 2, source_id=main.sources[1])
    assert sorted(d.path for d in of_second) == [
        "alps.txt",
        "broken.pdf",
        "copy-of-glaciers.txt",
        "unchanged.txt",
    ]


async def test_list_documents_refusals(indexer, world) -> None:
    main = world.alice_hash
    first = await indexer.documents.ListDocuments(
        document_service_pb2.ListDocumentsRequest(collection_id=main.id, page_size=2),
        metadata=auth("alice"),
    )
    bad_requests = [
        # A token is bound to the filters it was issued for.
        (dict(page_token=first.next_page_token, source_id=main.sources[0]), "INVALID_PAGE_TOKEN"),
        (dict(page_token="garbage"), "INVALID_PAGE_TOKEN"),
        (dict(statuses=[indexer_pb2.DOCUMENT_STATUS_UNSPECIFIED]), "INVALID_ARGUMENT"),
        (dict(source_id="not-a-uuid"), "INVALID_ARGUMENT"),
        (dict(page_size=-1), "INVALID_ARGUMENT"),
    ]
    for fields, reason in bad_requests:
        request = document_service_pb2.ListDocumentsRequest(collection_id=main.id, **fields)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await indexer.documents.ListDocuments(request, metadata=auth("alice"))
        assert reason_of(error.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, reason), fields
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await list_all(indexer, "bob", main.id, 10)
    assert reason_of(error.value)[:2] == (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")


# --- the deployed indexer ----------------------------------------------------------


def test_the_stacks_indexer_serves_search_and_documents(stack) -> None:
    """The indexer process wires both services (settings, embedder client, store)."""
    target = stack.endpoints[ServiceName.INDEXER].target
    token = (("authorization", f"Bearer {stack.tokens.clear['user']}"),)
    unknown = str(uuid.uuid4())
    with grpc.insecure_channel(target) as channel:
        searches = search_service_pb2_grpc.SearchServiceStub(channel)
        documents = document_service_pb2_grpc.DocumentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            searches.Search(
                search_service_pb2.SearchRequest(collection_id=unknown, query="glaciers"),
                metadata=token,
                timeout=30,
            )
        assert reason_of(error.value)[:2] == (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")
        reply = searches.SearchMulti(
            search_service_pb2.SearchMultiRequest(collection_ids=[unknown], query="glaciers"),
            metadata=token,
            timeout=30,
        )
        assert [(s.collection_id, s.reason) for s in reply.skipped] == [
            (unknown, "COLLECTION_NOT_FOUND")
        ]
        with pytest.raises(grpc.RpcError) as error:
            documents.ListDocuments(
                document_service_pb2.ListDocumentsRequest(collection_id=unknown),
                metadata=token,
                timeout=30,
            )
        assert reason_of(error.value)[:2] == (grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND")
