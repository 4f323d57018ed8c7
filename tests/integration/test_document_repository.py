"""The indexer's document repository against a real Postgres: generation-fenced
collection copies, the hashes that feed ``plan_documents``, atomic batches,
keyset pages and batches applied exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from indexer.adapters.document_repository import (
    CollectionRecord,
    DocumentRecord,
    DocumentRepository,
    DocumentStatus,
    SourceRecord,
    SourceStatus,
)
from indexer.domain.documents import content_hash, document_id, plan_documents
from kit.db.migrations import load_migrations, migrate
from kit.errors import InvalidArgument, NotFound

SCHEMA = "indexer"
CONFIG = {"embedding_model": "hash-384", "dimension": 384, "chunk_size": 256, "chunk_overlap": 32}


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, load_migrations("kit") + load_migrations("indexer"))
    yield pool
    await pool.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> DocumentRepository:
    return DocumentRepository(pool, SCHEMA)


def collection(collection_id: str, generation: int = 1, **changes: object) -> CollectionRecord:
    fields: dict = {
        "collection_id": collection_id,
        "owner_id": "alice",
        "alias_name": f"vo_{uuid.UUID(collection_id).hex}",
        "physical_collection": f"vo_{uuid.UUID(collection_id).hex}_g{generation}",
        "generation": generation,
        "config": CONFIG,
    }
    return CollectionRecord(**(fields | changes))


def doc(
    collection_id: str,
    source_id: str,
    path: str,
    digest: str,
    status: DocumentStatus = DocumentStatus.INDEXED,
    **changes: object,
) -> DocumentRecord:
    fields: dict = {
        "document_id": document_id(collection_id, source_id, path),
        "collection_id": collection_id,
        "source_id": source_id,
        "path": path,
        "content_hash": digest,
        "status": status,
        "media_type": "text/plain",
        "chunk_count": 2,
        "vector_count": 2,
        "bytes": 100,
    }
    return DocumentRecord(**(fields | changes))


async def new_collection(repo: DocumentRepository, sources: int = 1) -> tuple[str, list[str]]:
    collection_id = str(uuid.uuid4())
    assert await repo.upsert_collection(collection(collection_id))
    source_ids = [str(uuid.uuid4()) for _ in range(sources)]
    for number, source_id in enumerate(source_ids):
        source = SourceRecord(source_id, collection_id, "directory", f"/data/s{number}", ("*.md",))
        assert await repo.add_source(source)
    return collection_id, source_ids


async def test_collection_copy_is_fenced_by_generation(repo: DocumentRepository) -> None:
    collection_id = str(uuid.uuid4())
    assert await repo.upsert_collection(collection(collection_id, 2))
    # A late command of an older generation, or a redelivery, changes nothing.
    assert not await repo.upsert_collection(collection(collection_id, 1, owner_id="mallory"))
    assert not await repo.upsert_collection(collection(collection_id, 2, staging_collection="x"))
    stored = await repo.get_collection(collection_id)
    assert (stored.generation, stored.owner_id, stored.staging_collection) == (2, "alice", None)
    assert stored.config == CONFIG

    assert await repo.upsert_collection(collection(collection_id, 3, staging_collection="vo_s"))
    stored = await repo.get_collection(collection_id)
    assert (stored.generation, stored.staging_collection) == (3, "vo_s")

    with pytest.raises(NotFound) as missing:
        await repo.get_collection(str(uuid.uuid4()))
    assert missing.value.reason == "COLLECTION_NOT_FOUND"
    with pytest.raises(NotFound):
        await repo.get_collection("not-a-uuid")


async def test_sources_are_idempotent_and_removed_is_final(repo: DocumentRepository) -> None:
    collection_id, (source_id,) = await new_collection(repo)
    again = SourceRecord(source_id, collection_id, "directory", "/elsewhere")
    assert not await repo.add_source(again)
    assert await repo.set_source_status(source_id, SourceStatus.REMOVING)
    assert await repo.set_source_status(source_id, SourceStatus.REMOVED)
    assert not await repo.set_source_status(source_id, SourceStatus.ACTIVE)
    (stored,) = await repo.list_sources(collection_id)
    assert (stored.path, stored.include, stored.status) == ("/data/s0", ("*.md",), "REMOVED")

    with pytest.raises(NotFound) as unknown:
        await repo.add_source(SourceRecord(str(uuid.uuid4()), str(uuid.uuid4()), "upload", "x"))
    assert unknown.value.reason == "COLLECTION_NOT_FOUND"
    with pytest.raises(NotFound):
        await repo.set_source_status(str(uuid.uuid4()), SourceStatus.REMOVED)


async def test_previous_hashes_leave_failed_documents_out(repo: DocumentRepository) -> None:
    cid, (sid,) = await new_collection(repo)
    await repo.record_documents(
        [
            doc(cid, sid, "a.md", "ha"),
            doc(cid, sid, "b.md", "hb", DocumentStatus.FAILED, failure_reason="EXTRACTION"),
            doc(cid, sid, "c.md", "hc", DocumentStatus.SKIPPED_UNCHANGED),
            doc(cid, sid, "d.md", "ha", DocumentStatus.DUPLICATE),
        ]
    )
    # Skipped and duplicate documents have points too: a rescan must see them
    # as unchanged; a failed one is retried as new.
    assert await repo.previous_hashes(cid, sid) == {"a.md": "ha", "c.md": "hc", "d.md": "ha"}
    assert await repo.collection_hashes(cid) == {
        "ha": document_id(cid, sid, "a.md"),
        "hc": document_id(cid, sid, "c.md"),
    }
    assert await repo.collection_hashes(cid, exclude_source_id=sid) == {}


async def test_plan_from_the_repository_after_a_second_scan(repo: DocumentRepository) -> None:
    cid, (sid, other) = await new_collection(repo, sources=2)
    await repo.record_document(doc(cid, other, "shared.md", content_hash(b"shared")))
    first = {"a.md": b"alpha", "b.md": b"beta", "c.md": b"gamma"}
    scan = {path: content_hash(data) for path, data in first.items()}
    plan = plan_documents(await repo.previous_hashes(cid, sid), scan)
    assert plan.new == ("a.md", "b.md", "c.md")
    await repo.record_documents([doc(cid, sid, path, scan[path]) for path in plan.to_index])

    second = {"a.md": b"alpha", "b.md": b"beta v2", "d.md": b"delta", "e.md": b"shared"}
    scan = {path: content_hash(data) for path, data in second.items()}
    others = await repo.collection_hashes(cid, exclude_source_id=sid)
    plan = plan_documents(await repo.previous_hashes(cid, sid), scan, others)
    assert plan.new == ("d.md", "e.md")
    assert plan.changed == ("b.md",)
    assert plan.unchanged == ("a.md",)
    assert plan.removed == ("c.md",)
    (duplicate,) = plan.duplicates
    assert (duplicate.path, duplicate.duplicate_of) == (
        "e.md",
        document_id(cid, other, "shared.md"),
    )

    await repo.record_documents(
        [doc(cid, sid, "a.md", scan["a.md"], DocumentStatus.SKIPPED_UNCHANGED, vector_count=0)]
        + [doc(cid, sid, path, scan[path]) for path in ("b.md", "d.md")]
        + [
            doc(
                cid,
                sid,
                "e.md",
                scan["e.md"],
                DocumentStatus.DUPLICATE,
                duplicate_of=duplicate.duplicate_of,
            )
        ]
    )
    assert await repo.delete_documents(cid, sid, plan.removed) == 1
    third = plan_documents(await repo.previous_hashes(cid, sid), scan, others)
    assert third.unchanged == ("a.md", "b.md", "d.md", "e.md")
    assert (third.new, third.changed, third.removed) == ((), (), ())
    # The skipped document kept the figures of its points.
    (a, *_) = await repo.documents_of_source(cid, sid)
    assert (a.path, a.status, a.vector_count) == ("a.md", "SKIPPED_UNCHANGED", 2)


async def test_record_documents_is_all_or_nothing(repo: DocumentRepository) -> None:
    cid, (sid,) = await new_collection(repo)
    stranger = str(uuid.uuid4())  # a source the indexer was never told of
    batch = [doc(cid, sid, f"{n}.md", f"h{n}") for n in range(5)] + [doc(cid, stranger, "x", "h")]
    with pytest.raises(NotFound) as error:
        await repo.record_documents(batch)
    assert error.value.reason == "SOURCE_NOT_FOUND"
    assert await repo.documents_of_source(cid, sid) == []

    wrong_id = doc(cid, sid, "y.md", "h", document_id=str(uuid.uuid4()))
    with pytest.raises(InvalidArgument):
        await repo.record_documents([doc(cid, sid, "z.md", "h"), wrong_id])
    assert await repo.counts(cid) == (0, 0, 0)


async def test_a_batch_marked_processed_is_written_once(repo: DocumentRepository) -> None:
    cid, (sid,) = await new_collection(repo)
    op = str(uuid.uuid4())
    batch = [doc(cid, sid, "a.md", "h1")]
    assert await repo.record_documents(batch, processed=(op, "embed-1"))
    changed = [doc(cid, sid, "a.md", "h2")]
    assert not await repo.record_documents(changed, processed=(op, "embed-1"))
    assert await repo.previous_hashes(cid, sid) == {"a.md": "h1"}


async def test_delete_by_source_and_counts(repo: DocumentRepository) -> None:
    cid, (first, second) = await new_collection(repo, sources=2)
    await repo.record_documents(
        [doc(cid, first, f"{n}.md", f"h{n}", vector_count=3, bytes=10) for n in range(7)]
        + [doc(cid, second, f"{n}.md", f"g{n}", vector_count=5, bytes=20) for n in range(4)]
        + [doc(cid, second, "bad.pdf", "gx", DocumentStatus.FAILED, vector_count=0, bytes=9)]
    )
    assert await repo.counts(cid) == (11, 7 * 3 + 4 * 5, 7 * 10 + 4 * 20)
    assert await repo.delete_documents_of_source(cid, first) == 7
    assert await repo.delete_documents_of_source(cid, first) == 0
    assert await repo.counts(cid) == (4, 20, 80)
    assert len(await repo.documents_of_source(cid, second)) == 5
    assert await repo.counts(str(uuid.uuid4())) == (0, 0, 0)


async def test_pages_cover_each_document_once(repo: DocumentRepository) -> None:
    cid, sources = await new_collection(repo, sources=3)
    other_cid, (other_sid,) = await new_collection(repo)
    expected = set()
    batch = []
    for number in range(23):
        sid = sources[number % 3]
        status = DocumentStatus.FAILED if number % 5 == 0 else DocumentStatus.INDEXED
        batch.append(doc(cid, sid, f"dir/{number:02}.md", f"h{number}", status))
        expected.add(document_id(cid, sid, f"dir/{number:02}.md"))
    await repo.record_documents(batch)
    await repo.record_document(doc(other_cid, other_sid, "a.md", "h"))

    seen: list[str] = []
    token = ""
    while True:
        page, token = await repo.list_documents(cid, 4, token)
        assert len(page) <= 4
        seen += [d.document_id for d in page]
        if not token:
            break
    assert len(seen) == len(expected) and set(seen) == expected

    failed, token = await repo.list_documents(cid, 10, "", DocumentStatus.FAILED)
    assert len(failed) == 5 and token == ""
    assert {d.status for d in failed} == {"FAILED"}

    _, foreign = await repo.list_documents(cid, 2, "")
    with pytest.raises(InvalidArgument) as other:
        await repo.list_documents(other_cid, 2, foreign)
    assert other.value.reason == "INVALID_PAGE_TOKEN"
    for bad in (foreign, "not a token", "e30="):
        status = DocumentStatus.FAILED if bad == foreign else None
        with pytest.raises(InvalidArgument) as refused:
            await repo.list_documents(cid, 2, bad, status)
        assert refused.value.reason == "INVALID_PAGE_TOKEN"


async def test_mark_batch_processed_once_under_concurrency(repo: DocumentRepository) -> None:
    op = str(uuid.uuid4())
    results = await asyncio.gather(*(repo.mark_batch_processed(op, "b1") for _ in range(4)))
    assert sorted(results) == [False, False, False, True]
    assert not await repo.mark_batch_processed(op, "b1")
    assert await repo.mark_batch_processed(op, "b2")
    assert await repo.mark_batch_processed(str(uuid.uuid4()), "b1")
    assert await repo.forget_operation_batches(op) == 2
    assert await repo.mark_batch_processed(op, "b1")


async def test_deleting_a_collection_takes_its_sources_and_documents(
    repo: DocumentRepository,
) -> None:
    cid, (sid,) = await new_collection(repo)
    await repo.record_document(doc(cid, sid, "a.md", "h"))
    assert await repo.delete_collection(cid)
    assert not await repo.delete_collection(cid)
    assert await repo.list_sources(cid) == []
    assert await repo.counts(cid) == (0, 0, 0)


async def test_owner_usage_pages_the_owners_collections_with_their_counts(
    repo: DocumentRepository,
) -> None:
    ids = []
    for documents in (2, 0, 1):
        collection_id, (source_id,) = await new_collection(repo)
        await repo.record_documents(
            [doc(collection_id, source_id, f"d{n}.md", f"h{n}") for n in range(documents)]
        )
        ids.append(collection_id)
    # A failed document stores nothing; another owner's collection is not listed.
    await repo.record_documents(
        [
            doc(
                ids[1],
                (await repo.list_sources(ids[1]))[0].source_id,
                "bad.md",
                "hb",
                DocumentStatus.FAILED,
                vector_count=0,
                chunk_count=0,
            )
        ]
    )
    assert await repo.upsert_collection(collection(str(uuid.uuid4()), owner_id="bob"))

    first, token = await repo.owner_usage("alice", 2)
    rest, last = await repo.owner_usage("alice", 2, token)
    assert token and last == ""
    listed = {u.collection_id: (u.documents, u.vectors, u.bytes) for u in first + rest}
    assert [u.collection_id for u in first + rest] == sorted(ids)
    expected = dict(zip(ids, [(2, 4, 200), (0, 0, 0), (1, 2, 100)], strict=True))
    assert listed == expected
    for collection_id, (documents, vectors, stored) in expected.items():
        assert await repo.counts(collection_id) == (documents, vectors, stored)

    with pytest.raises(InvalidArgument) as foreign:
        await repo.owner_usage("bob", 2, token)  # a token of alice's list
    assert foreign.value.reason == "INVALID_PAGE_TOKEN"
    await repo.delete_collection(ids[0])  # what a completed DELETE does
    remaining, _ = await repo.owner_usage("alice", 10)
    assert [u.collection_id for u in remaining] == sorted(ids[1:])
