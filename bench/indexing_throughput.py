"""`make bench`: end-to-end indexing through all five services, against the embedder
alone on the same chunks, in one run.

Figures, in chunks/s (a chunk is one stored vector):
  embedder alone   the corpus's own chunks (cut here by the indexer's extraction and
                   chunking code, with the model's tokenizer) sent to the embedder
                   service: gRPC Embed calls and work-queue batches, the faster of
                   the two is the baseline
  end to end       CreateCollection over a directory of the same corpus, watched to
                   COMPLETED: walk, hash, extract, chunk, queue, embed, upsert,
                   record, account — vectors written / (end_time − create_time)
Targets (issue 4): MiniLM end to end ≥ 0.8 × embedder alone; the hashing model
(near-zero embedding cost, so the pipeline's own ceiling) ≥ 1,000 chunks/s; the
indexer's peak memory (its anonymous resident memory, sampled by the indexer
during the operation: the resident set less the file-backed pages, i.e. less
the embedded store's memory-mapped segments, which are page cache) grows less
than 1.5× when the corpus grows 10×. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from embedder_throughput import WORDS, through_grpc, through_queue

from embedder.adapters.triton_host import TritonHost
from indexer.adapters.tokenizers import tokenizer_for
from indexer.domain.chunking import chunk
from indexer.extraction import extract
from kit.config import ServiceName
from kit.embedding_models import HASH_BOW, MINILM
from kit.stack.launcher import Stack, StackOptions
from vectorops.common.v1 import config_pb2, operation_pb2, source_pb2
from vectorops.orchestrator.v1 import (
    collection_service_pb2,
    collection_service_pb2_grpc,
    operation_service_pb2,
    operation_service_pb2_grpc,
    orchestrator_pb2,
)


@dataclass(frozen=True)
class Corpus:
    folder: Path
    model: str
    chunk_size: int
    overlap: int
    chunks: list[str]


def write_corpus(
    folder: Path, documents: int, words: int, model: str, size: int, overlap: int
) -> Corpus:
    """Text files of random words, and the chunks the indexer will cut from them."""
    rng = random.Random(documents * 31 + words)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_for(model)
    chunks: list[str] = []
    for number in range(documents):
        text = f"document {number}. " + " ".join(rng.choice(WORDS) for _ in range(words))
        path = folder / f"doc-{number:05d}.txt"
        path.write_text(text)
        sections = extract(path.read_bytes(), path.name).sections
        chunks += [piece.text for piece in chunk(sections, tokenizer, size, overlap)]
    return Corpus(folder, model, size, overlap, chunks)


def index_end_to_end(stack: Stack, corpus: Corpus) -> tuple[float, operation_pb2.Progress, object]:
    """Create a collection over ``corpus``; chunks/s from the operation's own times."""
    assert stack.tokens is not None
    metadata = (("authorization", f"Bearer {stack.tokens.clear['user']}"),)
    with grpc.insecure_channel(stack.endpoints[ServiceName.ORCHESTRATOR].target) as channel:
        collections = collection_service_pb2_grpc.CollectionServiceStub(channel)
        operations = operation_service_pb2_grpc.OperationServiceStub(channel)
        created = collections.CreateCollection(
            collection_service_pb2.CreateCollectionRequest(
                collection=orchestrator_pb2.Collection(
                    name=f"bench-{uuid.uuid4().hex[:8]}",
                    config=config_pb2.CollectionConfig(
                        embedding_model=corpus.model,
                        chunk_size=corpus.chunk_size,
                        chunk_overlap=corpus.overlap,
                    ),
                ),
                sources=[
                    source_pb2.Source(directory=source_pb2.DirectorySource(path=str(corpus.folder)))
                ],
                request_id=str(uuid.uuid4()),
            ),
            metadata=metadata,
        )
        final = None
        for update in operations.WatchOperation(
            operation_service_pb2.WatchOperationRequest(operation_id=created.operation.id),
            metadata=metadata,
            timeout=3600,
        ):
            final = update.operation
        assert final is not None and final.status == operation_pb2.OPERATION_STATUS_COMPLETED, final
        seconds = final.end_time.ToNanoseconds() - final.create_time.ToNanoseconds()
        written = final.progress.vectors_written
        assert written == len(corpus.chunks), (written, len(corpus.chunks))
        return written / (seconds / 1e9), final.progress, final.resources


def embedder_alone(stack: Stack, corpus: Corpus, batch: int, flight: int) -> float:
    assert stack.tokens is not None
    target = stack.endpoints[ServiceName.EMBEDDER].target
    token = stack.tokens.clear["service"]
    grpc_rate = asyncio.run(
        through_grpc(target, token, corpus.chunks, batch, flight, model=corpus.model)
    )
    queue_rate = asyncio.run(through_queue(stack.nats_url, corpus.chunks, batch, corpus.model))
    print(f"  embedder alone: gRPC {grpc_rate:8.1f}, work queue {queue_rate:8.1f} chunks/s")
    return max(grpc_rate, queue_rate)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minilm-documents", type=int, default=120)
    parser.add_argument("--hash-documents", type=int, default=1500)
    parser.add_argument("--words", type=int, default=400)
    parser.add_argument("--memory-documents", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    work = Path(tempfile.mkdtemp(prefix="vo-bench-index-"))
    work.chmod(0o755)
    failed = False
    try:
        with TritonHost(work / "triton") as triton:
            options = StackOptions.ephemeral(work / "stack")
            options.extra_env = {"VECTOROPS_EMBEDDER_TRITON_URL": triton.url}
            with Stack(options) as stack:
                root = options.roots()[0]
                minilm = write_corpus(
                    root / "minilm", args.minilm_documents, args.words, MINILM.name, 128, 16
                )
                print(f"MiniLM: {args.minilm_documents} documents, {len(minilm.chunks)} chunks")
                alone = embedder_alone(stack, minilm, args.batch, args.in_flight)
                end_to_end, _, _ = index_end_to_end(stack, minilm)
                ratio = end_to_end / alone
                print(f"  end to end:     {end_to_end:8.1f} chunks/s")
                print(
                    f"  end to end / embedder alone: {ratio:.2f} (≥ 0.80) {verdict(ratio >= 0.8)}"
                )
                failed |= ratio < 0.8

                hashing = write_corpus(
                    root / "hash", args.hash_documents, args.words, HASH_BOW.name, 64, 8
                )
                print(
                    f"hashing model: {args.hash_documents} documents, {len(hashing.chunks)} chunks"
                )
                embedder_alone(stack, hashing, args.batch, args.in_flight)
                rate, _, _ = index_end_to_end(stack, hashing)
                print(f"  end to end:     {rate:8.1f} chunks/s  (≥ 1000) {verdict(rate >= 1000)}")
                failed |= rate < 1000

                peaks = []
                for scale in (1, 10):
                    documents = args.memory_documents * scale
                    corpus = write_corpus(
                        root / f"memory-{scale}", documents, args.words, HASH_BOW.name, 64, 8
                    )
                    _, _, resources = index_end_to_end(stack, corpus)
                    peaks.append(resources.peak_memory_bytes)
                    print(
                        f"memory: {documents} documents, {len(corpus.chunks)} chunks, "
                        f"indexer peak memory {resources.peak_memory_bytes / 2**20:.0f} MiB"
                    )
                growth = peaks[1] / peaks[0]
                print(
                    f"  peak memory, 10x the corpus: {growth:.2f}x (< 1.5) {verdict(growth < 1.5)}"
                )
                failed |= growth >= 1.5
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{os.cpu_count()} CPUs, batch {args.batch}, {args.in_flight} in flight")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    start = time.perf_counter()
    try:
        main()
    finally:
        print(f"bench took {time.perf_counter() - start:.0f} s")
