"""`make bench`: indexing chunks/s with one and with two embedder replicas, on the
same corpus, in one run (issue 9).

Each count gets a fresh stack (so the second run finds nothing indexed) against
the same Triton, which both replicas share: the embed work queue is one durable
consumer that every replica pulls from, so a second replica adds a second set of
batches in flight, and the model is the only thing the replicas share. On a
machine of few cores the gain is bounded by those cores (the model, the indexer
and the embedders compete for them); the figures, not a target, are the output.
Both models: MiniLM (model-bound) and the hashing model (pipeline-bound).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from indexing_throughput import index_end_to_end, write_corpus

from embedder.adapters.triton_host import TritonHost
from kit.config import ServiceName
from kit.embedding_models import HASH_BOW, MINILM
from kit.stack.launcher import Stack, StackOptions


def chunks_per_second(work: Path, triton_url: str, replicas: int, corpora: dict) -> dict:
    options = StackOptions.ephemeral(work / f"stack-{replicas}")
    options.replicas = {ServiceName.EMBEDDER: replicas}
    options.extra_env = {"VECTOROPS_EMBEDDER_TRITON_URL": triton_url}
    rates = {}
    with Stack(options) as stack:
        assert len(stack.replica_endpoints(ServiceName.EMBEDDER)) == replicas
        root = options.roots()[0]
        for name, (model, documents, words, size, overlap) in corpora.items():
            corpus = write_corpus(root / name, documents, words, model, size, overlap)
            rates[name], _, _ = index_end_to_end(stack, corpus)
            print(
                f"  {replicas} embedder replica(s), {name}: {documents} documents, "
                f"{len(corpus.chunks)} chunks, {rates[name]:8.1f} chunks/s",
                flush=True,
            )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minilm-documents", type=int, default=120)
    parser.add_argument("--hash-documents", type=int, default=1500)
    parser.add_argument("--words", type=int, default=400)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    corpora = {
        "MiniLM": (MINILM.name, args.minilm_documents, args.words, 128, 16),
        "hashing": (HASH_BOW.name, args.hash_documents, args.words, 64, 8),
    }
    work = Path(tempfile.mkdtemp(prefix="vo-bench-replicas-"))
    work.chmod(0o755)
    try:
        with TritonHost(work / "triton") as triton:
            one = chunks_per_second(work, triton.url, 1, corpora)
            two = chunks_per_second(work, triton.url, 2, corpora)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nembedder replicas, {os.cpu_count()} CPUs, one shared Triton:")
    for name in corpora:
        print(
            f"  {name:8s} 1 replica {one[name]:8.1f} chunks/s, 2 replicas "
            f"{two[name]:8.1f} chunks/s ({two[name] / one[name]:.2f}x)"
        )


if __name__ == "__main__":
    main()
