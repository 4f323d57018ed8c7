"""A quick local measurement of the indexer's ingest pipeline alone (not `make bench`,
not a test): chunks/s of ``Ingestor.ingest_directory`` through the embed work queue.

The parts are real: an embedded Postgres, a nats-server, a Triton server, Qdrant's
embedded engine, and the embedder's ``EmbedWorker`` consuming the queue -- in this
process (default; it then shares this process's interpreter with the indexer) or
as the embedder service's own process (``--embedder-process``). The corpus is
``--docs`` text documents of about ``--chunks`` chunks each.

``--memory`` runs the corpus and then ten times the corpus and prints the peak of
Python allocations (tracemalloc) of each ingest: the pipeline streams documents,
so the peak should barely grow. tracemalloc slows everything down: the rates of
a ``--memory`` run are not the throughput.

    .venv/bin/python bench/ingest_pipeline_local.py [--model MODEL] [--docs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import tempfile
import time
import tracemalloc
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg

from embedder.adapters.triton_client import TritonClient
from embedder.adapters.triton_host import TritonHost
from embedder.embedding import Embedder, Limits, Priority
from embedder.worker import EmbedWorker, consumer_spec
from indexer.adapters.document_repository import CollectionRecord, DocumentRepository, SourceRecord
from indexer.adapters.edge_store import EdgeVectorStore
from indexer.adapters.tokenizers import tokenizer_for
from indexer.domain.chunking import chunk
from indexer.embed_queue import QueueEmbedder
from indexer.extraction import extract
from indexer.ingest import Ingestor, IngestResult
from kit.bus.jetstream import JetStream
from kit.bus.topology import ALL_STREAMS
from kit.config import ServiceName
from kit.db.migrations import load_migrations, migrate
from kit.embedding_models import HASH_BOW, MINILM, ModelRegistry
from kit.stack.launcher import Stack, StackOptions
from kit.stack.nats import NatsServer
from kit.stack.postgres import EmbeddedPostgres

WORDS = (
    "vector search index collection document chunk embedding model query semantic "
    "similarity retrieval ranking token batch queue operation reindex switch cleanup "
    "quota audit source append remove validation staging alias payload metadata score "
    "cluster replica shard latency throughput backpressure deadline priority health "
    "glacier fjord kettle basalt turbine harbour lantern meadow orchard quarry"
).split()
CHUNK_SIZE, CHUNK_OVERLAP = 128, 16


def write_corpus(root: Path, documents: int, chunks: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    words = CHUNK_SIZE + (chunks - 1) * (CHUNK_SIZE - CHUNK_OVERLAP)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(documents):
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        (root / f"doc{n:05d}.txt").write_text(f"Document {n}.\n\n{text}\n")


async def ingest_once(
    repo: DocumentRepository,
    store: EdgeVectorStore,
    queue: QueueEmbedder,
    root: Path,
    model: str,
    args: argparse.Namespace,
) -> tuple[IngestResult, float]:
    collection_id = str(uuid.uuid4())
    hex_id = uuid.UUID(collection_id).hex
    collection = CollectionRecord(
        collection_id=collection_id,
        owner_id="bench",
        alias_name=f"vo_{hex_id}",
        physical_collection=f"vo_{hex_id}_g1",
        generation=1,
        config={"embedding_model": model, "chunk_size": CHUNK_SIZE, "chunk_overlap": CHUNK_OVERLAP},
    )
    await repo.upsert_collection(collection)
    source = SourceRecord(
        source_id=str(uuid.uuid4()), collection_id=collection_id, kind="directory", path=str(root)
    )
    await repo.add_source(source)
    ingestor = Ingestor(repo, store, batch_chunks=args.batch, in_flight=args.in_flight)
    operation = str(uuid.uuid4())
    started = time.perf_counter()
    async with queue.for_operation(operation, collection_id) as embed:
        result = await ingestor.ingest_directory(
            collection, source, [root.parent], operation, embed=embed
        )
    return result, time.perf_counter() - started


def model_name(args: argparse.Namespace) -> str:
    return MINILM.name if args.model == "minilm" else HASH_BOW.name


def chunk_texts(root: Path, model: str) -> list[str]:
    """The chunks the pipeline embeds for the corpus under ``root``."""
    tokenizer = tokenizer_for(model)
    texts: list[str] = []
    for path in sorted(root.iterdir()):
        sections = extract(path.read_bytes(), path.name).sections
        texts += [c.text for c in chunk(sections, tokenizer, CHUNK_SIZE, CHUNK_OVERLAP)]
    return texts


async def embedder_alone(triton_url: str, model: str, texts: list[str], batch: int) -> float:
    """The embedder's own rate on the same chunks: Embedder.embed over Triton, four
    batches at once (the embedder's default bulk slots), no queue, no indexer."""
    client = TritonClient(triton_url)
    try:
        embedder = Embedder(ModelRegistry(), client, Limits(512, 4_000_000, 4, 4, 2.0, 60.0))
        slots = asyncio.Semaphore(4)

        async def one(part: list[str]) -> None:
            async with slots:
                await embedder.embed(
                    model, part, is_query=False, priority=Priority.BULK, path="bench"
                )

        parts = [texts[i : i + batch] for i in range(0, len(texts), batch)]
        await asyncio.gather(*(one(part) for part in parts[:4]))  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(one(part) for part in parts))
        return len(texts) / (time.perf_counter() - started)
    finally:
        await client.close()


async def measure(
    args: argparse.Namespace, work: Path, pg_dsn: str, nats_url: str, triton_url: str
):
    model = model_name(args)
    async with AsyncExitStack() as stack:
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await migrate(conn, "indexer", load_migrations("kit") + load_migrations("indexer"))
        repo = DocumentRepository(pool, "indexer")
        store = EdgeVectorStore(work / "vectors")
        stack.push_async_callback(store.close)
        bus = await JetStream.connect(nats_url, name="bench-indexer")
        stack.push_async_callback(bus.close)
        await bus.ensure_streams(ALL_STREAMS)
        if not args.embedder_process:
            client = TritonClient(triton_url)
            stack.push_async_callback(client.close)
            limits = Limits(512, 4_000_000, 4, 4, 2.0, 60.0)
            worker = EmbedWorker(
                Embedder(ModelRegistry(), client, limits),
                bus,
                instance="bench",
                ack_wait_seconds=30,
            )
            stop = asyncio.Event()
            consuming = asyncio.create_task(
                bus.consume(consumer_spec(30), worker.handle, concurrency=4, stop=stop)
            )

            async def stop_worker() -> None:
                stop.set()
                await consuming

            stack.push_async_callback(stop_worker)
        queue = QueueEmbedder(bus, timeout_seconds=120, wait_seconds=300)

        sizes = [args.docs] + ([args.docs * 10] if args.memory else [])
        for size in sizes:
            root = work / "corpus" / f"docs{size}"
            write_corpus(root, size, args.chunks)
            await ingest_once(repo, store, queue, root, model, args)  # warm up, then measure
            texts = chunk_texts(root, model) if args.compare else []
            rates, alone_rates = [], []
            for _ in range(args.rounds):
                if args.compare:  # in turn, so a burst of other work hurts neither more
                    alone_rates.append(await embedder_alone(triton_url, model, texts, args.batch))
                    print(f"the embedder alone: {alone_rates[-1]:.0f} chunks/s", flush=True)
                if args.memory:
                    tracemalloc.start()
                result, seconds = await ingest_once(repo, store, queue, root, model, args)
                peak = 0
                if args.memory:
                    peak = tracemalloc.get_traced_memory()[1]
                    tracemalloc.stop()
                rates.append(result.vectors_written / seconds)
                memory = f", peak Python allocations {peak / 2**20:.1f} MiB" if args.memory else ""
                print(
                    f"{size} documents, {result.vectors_written} chunks in {seconds:.2f} s: "
                    f"{rates[-1]:.0f} chunks/s{memory}",
                    flush=True,
                )
            print(f"best of {args.rounds}: {max(rates):.0f} chunks/s", flush=True)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak RSS of this process so far: {rss:.0f} MiB", flush=True)
            if args.compare:
                best_alone = max(alone_rates)
                print(
                    f"the embedder alone on the same chunks, best: {best_alone:.0f} chunks/s; "
                    f"pipeline / embedder = {max(rates) / best_alone:.2f}",
                    flush=True,
                )
            print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=("hash", "minilm"), default="hash")
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--embedder-process", action="store_true")
    parser.add_argument("--compare", action="store_true", help="also time the embedder alone")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="vo-ingest-bench-"))
    work.chmod(0o755)
    postgres = EmbeddedPostgres(work / "pg")
    nats = NatsServer(work / "nats")
    triton_model = ModelRegistry().get(model_name(args)).triton_model
    triton = TritonHost(work / "triton", models=[triton_model])
    embedders = None
    try:
        postgres.start()
        nats.start()
        triton.start()
        if args.embedder_process:
            options = StackOptions.ephemeral(work / "stack")
            options.postgres_dsn = postgres.create_database("stack")
            options.nats_url = nats.url
            options.services = (ServiceName.EMBEDDER,)
            options.extra_env = {
                "VECTOROPS_EMBEDDER_TRITON_URL": triton.url,
                "VECTOROPS_EMBEDDER_MODELS": model_name(args),
            }
            embedders = Stack(options)
            embedders.start()
        dsn = postgres.create_database("bench")
        print(
            f"{os.cpu_count()} CPUs, model {args.model}, batch {args.batch}, "
            f"{args.in_flight} in flight",
            flush=True,
        )
        asyncio.run(measure(args, work, dsn, nats.url, triton.url))
    finally:
        if embedders is not None:
            embedders.stop()
        triton.stop()
        nats.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
