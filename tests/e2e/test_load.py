"""Load through the real stack: twenty clients, each its own owner with a
run-time token, create a collection, then for a bounded time search it and now
and then append a source to it and wait for the APPEND. No call may fail
unexpectedly; the one documented, expected refusal under load is
RESOURCE_EXHAUSTED ``EMBEDDER_OVERLOADED`` (a query waited past the embedder's
queue time), which the client retries with backoff and which is counted. At the
end every operation is COMPLETED and every collection READY with as many vectors
as its documents have chunks. The figures go to the session's summary table.

``VECTOROPS_LOAD_SECONDS`` (default 40) and ``VECTOROPS_LOAD_CLIENTS`` (default
20) make the same test a longer soak."""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from api import Client, config, directory, error_reason, request_id
from corpus import WORDS, write_text_corpus
from terminal_tables import add_row

from kit.config import ServiceName
from vectorops.common.v1 import operation_pb2, principal_pb2
from vectorops.indexer.v1 import indexer_pb2
from vectorops.orchestrator.v1 import (
    operation_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)

pytestmark = pytest.mark.integration

SECONDS = float(os.environ.get("VECTOROPS_LOAD_SECONDS", "40"))
CLIENTS = int(os.environ.get("VECTOROPS_LOAD_CLIENTS", "20"))
APPEND_EVERY_SECONDS = 8.0  # each client appends about this often
# Refusals a client is told to retry with backoff (documented on the API).
RETRIED = {(grpc.StatusCode.RESOURCE_EXHAUSTED, "EMBEDDER_OVERLOADED")}
MAX_RETRIES = 8
TABLE = "load test"


@dataclass
class Tally:
    """What every client did, shared across threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    operations: Counter = field(default_factory=Counter)  # kind → count
    search_seconds: list[float] = field(default_factory=list)
    retried: Counter = field(default_factory=Counter)  # reason → count
    unexpected: list[str] = field(default_factory=list)

    def count(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.operations[kind] += 1
            if kind == "search":
                self.search_seconds.append(seconds)


def call(tally: Tally, kind: str, request):
    """``request()``, retried with backoff on the expected refusals; any other
    error is recorded as unexpected and raised."""
    delay = 0.05
    for _ in range(MAX_RETRIES):
        started = time.monotonic()
        try:
            result = request()
        except grpc.RpcError as error:
            reason = _reason(error)
            if (error.code(), reason) not in RETRIED:
                with tally.lock:
                    tally.unexpected.append(f"{kind}: {error.code().name} {reason}")
                raise
            with tally.lock:
                tally.retried[reason] += 1
            time.sleep(delay * random.uniform(1, 2))
            delay *= 2
            continue
        tally.count(kind, time.monotonic() - started)
        return result
    with tally.lock:
        tally.unexpected.append(f"{kind}: still refused after {MAX_RETRIES} tries")
    raise AssertionError(f"{kind} refused {MAX_RETRIES} times")


def _reason(error: grpc.RpcError) -> str:
    try:
        return error_reason(error)
    except AssertionError:
        return ""


@dataclass
class Owner:
    """One client's own owner, token, collection and documents written."""

    number: int
    client: Client
    root: Path
    collection_id: str = ""
    files: int = 0
    operation_ids: list[str] = field(default_factory=list)


def make_owners(stack, admin_token: str) -> list[Owner]:
    channel = grpc.insecure_channel(stack.endpoints[ServiceName.ORCHESTRATOR].target)
    tokens = token_service_pb2_grpc.TokenServiceStub(channel)
    run = uuid.uuid4().hex[:8]
    owners = []
    try:
        for number in range(CLIENTS):
            created = tokens.CreateToken(
                token_service_pb2.CreateTokenRequest(
                    principal_id=f"load-{run}-{number}",
                    role=principal_pb2.ROLE_USER,
                    description="load test",
                    request_id=request_id(),
                ),
                metadata=(("authorization", f"Bearer {admin_token}"),),
                timeout=30,
            )
            root = stack.options.roots()[0] / f"load-{run}" / f"client-{number}"
            owners.append(Owner(number, Client(stack, created.bearer_token), root))
    finally:
        channel.close()
    return owners


def write_source(owner: Owner, name: str, documents: int, seed: int) -> str:
    folder = owner.root / name
    write_text_corpus(folder, documents=documents, words=60, seed=seed)
    owner.files += documents
    return str(folder)


def run_client(owner: Owner, tally: Tally, start_line: threading.Barrier, window: dict) -> None:
    api = owner.client
    first = write_source(owner, "initial", documents=3, seed=owner.number * 1000)
    made = call(
        tally,
        "create",
        lambda: api.create(f"load-{owner.number}", config(), [directory(first)]),
    )
    owner.collection_id = made.collection.id
    owner.operation_ids.append(made.operation.id)
    api.finish(made.operation.id)
    start_line.wait(timeout=120)
    until = window["until"]

    rng = random.Random(owner.number)
    next_append = time.monotonic() + rng.uniform(1, APPEND_EVERY_SECONDS)
    appends = 0
    while time.monotonic() < until:
        query = " ".join(rng.choice(WORDS) for _ in range(3))
        found = call(tally, "search", lambda q=query: api.search(owner.collection_id, q))
        strangers = {hit.collection_id for hit in found.hits} - {owner.collection_id}
        if strangers:
            with tally.lock:
                tally.unexpected.append(f"search: hits of other collections {strangers}")
        if time.monotonic() >= next_append:
            appends += 1
            path = write_source(owner, f"append-{appends}", 2, owner.number * 1000 + appends)
            added = call(
                tally, "append", lambda p=path: api.add_source(owner.collection_id, directory(p))
            )
            owner.operation_ids.append(added.operation.id)
            api.finish(added.operation.id)
            next_append = time.monotonic() + APPEND_EVERY_SECONDS


def check_owner(owner: Owner) -> None:
    """Every operation COMPLETED; the collection READY with a vector per chunk."""
    api = owner.client
    listed = api.operations.ListOperations(
        operation_service_pb2.ListOperationsRequest(collection_id=owner.collection_id),
        metadata=api.metadata,
        timeout=30,
    ).operations
    assert sorted(op.id for op in listed) == sorted(owner.operation_ids)
    assert {op.status for op in listed} == {operation_pb2.OPERATION_STATUS_COMPLETED}
    collection = api.get(owner.collection_id)
    assert collection.status == operation_pb2.COLLECTION_STATUS_READY
    documents = api.list_documents(owner.collection_id)
    assert len(documents) == owner.files
    assert {d.status for d in documents} == {indexer_pb2.DOCUMENT_STATUS_COMPLETED}
    assert collection.vector_count == sum(d.chunk_count for d in documents) > 0


def test_twenty_clients_work_concurrently_without_unexpected_errors(stack) -> None:
    owners = make_owners(stack, stack.tokens.clear["admin"])
    tally = Tally()
    window: dict[str, float] = {}

    def open_window() -> None:
        """Run once every collection is READY: the timed loop starts for all."""
        window["start"] = time.monotonic()
        window["until"] = window["start"] + SECONDS

    start_line = threading.Barrier(len(owners), action=open_window)

    def client(owner: Owner) -> None:
        try:
            run_client(owner, tally, start_line, window)
        except BaseException:
            start_line.abort()  # the others stop waiting for this one
            raise

    try:
        with ThreadPoolExecutor(max_workers=len(owners)) as pool:
            futures = [pool.submit(client, owner) for owner in owners]
            errors = [future.exception() for future in futures]
        loop_seconds = time.monotonic() - window.get("start", time.monotonic())
        assert not tally.unexpected, Counter(tally.unexpected)
        assert errors == [None] * len(owners), [e for e in errors if e is not None]
        for owner in owners:
            check_owner(owner)
    finally:
        for owner in owners:
            owner.client.close()

    searches = sorted(tally.search_seconds)
    total = sum(tally.operations.values()) - tally.operations["create"]
    figures = [
        ("clients", str(len(owners))),
        ("timed seconds", f"{loop_seconds:.1f}"),
        ("operations/s", f"{total / loop_seconds:.1f}"),
        ("searches/s", f"{len(searches) / loop_seconds:.1f}"),
        ("search p50 ms", f"{statistics.median(searches) * 1000:.1f}"),
        ("search p99 ms", f"{searches[int(0.99 * (len(searches) - 1))] * 1000:.1f}"),
        ("appends (completed)", str(tally.operations["append"])),
        ("retried EMBEDDER_OVERLOADED", str(tally.retried["EMBEDDER_OVERLOADED"])),
        ("unexpected errors", str(len(tally.unexpected))),
    ]
    for name, value in figures:
        add_row(TABLE, ("figure", "value"), (name, value))
    assert tally.operations["append"] >= len(owners)  # each client appended at least once
    assert len(searches) >= len(owners) * 10
