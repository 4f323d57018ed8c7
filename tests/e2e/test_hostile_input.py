"""Hostile input: every RPC every service serves gets requests that hypothesis
builds from the RPC's own request descriptor (huge and odd strings, SQL and path
metacharacters, limits of every number type, empty and oversized lists, unknown
enum numbers, garbage page tokens), as admin, user and service. Each answer is
OK or a deliberate status with an ErrorInfo reason, never UNKNOWN or INTERNAL;
no service dies; and the database changes only where a call said it did
something (or where a refusal is audited on purpose)."""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from api import HASH_MODEL, MINILM, Client, config, directory
from corpus import write_text_corpus
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import vectorops
from kit.grpc.message_limits import DEFAULT_MAX_MESSAGE_BYTES
from vectorops.audit.v1 import audit_service_pb2
from vectorops.resources.v1 import resource_service_pb2

pytestmark = pytest.mark.integration

# Served by every server, not part of the API under test.
INFRASTRUCTURE = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# Standard APIs our servers serve besides the generated vectorops ones.
THIRD_PARTY_MODULES = (operations_pb2,)

DELIBERATE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
# RPCs that are declined by design (operations are the audit trail: never deleted).
DECLINED = frozenset({"google.longrunning.Operations/DeleteOperation"})

# Standard RPCs that change state without a request_id.
FOREIGN_MUTATIONS = frozenset({"google.longrunning.Operations/CancelOperation"})

# Rows a call writes on purpose, per call, by outcome: "OK" or the refusal's
# ErrorInfo reason. A table missing here must not change. Counts are upper bounds
# for OK (a replayed request_id writes nothing) and exact for audited refusals.
AUDIT_RECORD = {"resources.outbox": 1, "audit.audit_events": 1}
WRITES = {
    # Replaces the owner's usage row, audited usage.reconcile.
    "vectorops.resources.v1.ResourceService/ReconcileUsage": {
        "OK": {"resources.usage": 1, **AUDIT_RECORD},
    },
    "vectorops.resources.v1.ResourceService/Reserve": {
        "OK": {"resources.reservations": 1},
        "QUOTA_EXCEEDED": AUDIT_RECORD,
        "INSUFFICIENT_HEADROOM": AUDIT_RECORD,
    },
}
# Refusals whose audit record is required, not merely allowed.
AUDITED_REFUSALS = frozenset({"QUOTA_EXCEEDED", "INSUFFICIENT_HEADROOM"})

CALLERS = ("admin", "admin", "user", "service")
DEADLINE_SECONDS = 30.0
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
)
MAX_DEPTH = 3

HOSTILE_TEXTS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "%00",
    "\x1b[31m\x07\x08\x7f",
    "\r\n\t\v\f",
    "'; DROP TABLE collections; --",
    '" OR 1=1 --',
    "%' OR '%'='",
    "$$; SELECT pg_sleep(5); $$",
    "../../etc/passwd",
    "..\\..\\windows\\system32",
    "/etc/passwd",
    "..",
    "./",
    "*",
    "**/*",
    "~root",
    "${jndi:ldap://x/y}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "\u202eevil",
    "\ufeffbom",
    "\U0001f4a9\U0001f600\U00010348",
    "\U000e0001\U0010fffd",
    "Z\u0351\u0358\u0360",
    "collections/",
    "operations/",
    "operations/../../x",
    "-1",
    "9223372036854775808",
    "NaN",
    "null",
    "00000000-0000-0000-0000-000000000000",
)
NON_EMPTY = tuple(text for text in HOSTILE_TEXTS if text)
BIG_SIZES = (4096, 65536, 1 << 20)
INT_LIMITS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


@dataclass(frozen=True)
class Rpc:
    method: MethodDescriptor

    @property
    def name(self) -> str:
        return f"{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def path(self) -> str:
        return f"/{self.name}"

    @property
    def mutating(self) -> bool:
        """Every mutating request of ours carries a request_id (the API's rule)."""
        return self.name in FOREIGN_MUTATIONS or _has_request_id(self.method.input_type, depth=0)


def _has_request_id(message: Descriptor, depth: int) -> bool:
    if "request_id" in message.fields_by_name:
        return True
    return depth < 1 and any(
        _has_request_id(f.message_type, depth + 1)
        for f in message.fields
        if f.message_type is not None
    )


def generated_rpcs() -> list[Rpc]:
    """Every RPC of every service in the generated stubs (and the standard APIs we
    serve): a new RPC is covered without touching this file."""
    files = [module.DESCRIPTOR for module in THIRD_PARTY_MODULES]
    # The stubs are namespace packages (no __init__): find their modules by file.
    for root in map(Path, vectorops.__path__):
        for path in sorted(root.rglob("*_pb2.py")):
            name = ".".join(("vectorops", *path.relative_to(root).with_suffix("").parts))
            files.append(importlib.import_module(name).DESCRIPTOR)
    rpcs = [
        Rpc(method)
        for file in files
        for service in file.services_by_name.values()
        if service.full_name not in INFRASTRUCTURE
        for method in service.methods
    ]
    return sorted(rpcs, key=lambda rpc: rpc.name)


RPCS = generated_rpcs()


# -- strategies, from the descriptor --------------------------------------------------------


def huge(pieces):
    return st.builds(
        lambda piece, size: (piece * (size // len(piece) + 1))[:size],
        pieces,
        st.sampled_from(BIG_SIZES),
    )


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_TEXTS),
        # Any code point but surrogates (protobuf strings are UTF-8): control, astral, NUL.
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
        huge(st.sampled_from(NON_EMPTY)),
    )


def identifier(known: tuple[str, ...]) -> st.SearchStrategy[str]:
    choices = [
        hostile_text(),
        st.uuids().map(str),
        st.sampled_from(("x" * 10_000, "1" * 300, str(uuid.uuid4()).upper())),
    ]
    if known:
        choices.append(st.sampled_from(known))
    return st.one_of(*choices)


def page_token() -> st.SearchStrategy[str]:
    import base64

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode()

    return st.one_of(
        hostile_text(),
        st.sampled_from(("o:-1", "o:99999999999999999999999", "o:", "x:1", "o:1e9", "o:0x10")).map(
            b64
        ),
        st.binary(max_size=64).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        st.text(max_size=20).map(b64),
    )


def scalar(field_: FieldDescriptor, known: tuple[str, ...]) -> st.SearchStrategy:
    cpp = field_.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if field_.type == FieldDescriptor.TYPE_BYTES:
            return st.one_of(
                st.binary(max_size=64),
                huge(st.sampled_from((b"\x00", b"%PDF-1.7\n", b"\xff\xfe", b"PK\x03\x04"))),
            )
        if field_.name.endswith("page_token"):
            return page_token()
        if field_.name.endswith("_id") or field_.name.endswith("_ids") or field_.name == "name":
            return identifier(known)
        if known:
            return st.one_of(hostile_text(), st.sampled_from(known))
        return hostile_text()
    if cpp in INT_LIMITS:
        low, high = INT_LIMITS[cpp]
        return st.one_of(
            st.sampled_from((low, high, 0, -1, 1, high - 1)).filter(lambda v: low <= v <= high),
            st.integers(low, high),
        )
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return st.one_of(
            st.sampled_from((float("nan"), float("inf"), float("-inf"), -0.0, -1.0, 1e308, 1e-308)),
            st.floats(allow_nan=True, allow_infinity=True, width=32),
        )
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        return st.one_of(
            st.sampled_from([value.number for value in field_.enum_type.values]),
            st.integers(-(2**31), 2**31 - 1),  # numbers the enum does not have
        )
    raise AssertionError(f"no strategy for {field_.full_name}")


def value_of(field_: FieldDescriptor, depth: int, known: tuple[str, ...]) -> st.SearchStrategy:
    if field_.message_type is not None:
        return message(field_.message_type, depth + 1, known)
    return scalar(field_, known)


def small(field_: FieldDescriptor, known: tuple[str, ...]) -> st.SearchStrategy:
    """A short value of ``field_``: the element of an oversized list (a 1 MiB
    string 20,000 times would be 20 GB)."""
    if field_.message_type is not None:
        return st.just(message_factory.GetMessageClass(field_.message_type)())
    if field_.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=8)
    if field_.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return st.sampled_from(NON_EMPTY + known)
    return scalar(field_, known)


def repeated(field_: FieldDescriptor, depth: int, known: tuple[str, ...]) -> st.SearchStrategy:
    return st.one_of(
        st.lists(value_of(field_, depth, known), max_size=3),
        # Oversized: one short element many times (cheap to draw, still a huge list).
        st.builds(
            lambda item, count: [item] * count,
            small(field_, known),
            st.sampled_from((1000, 20_000)),
        ),
    )


def message(descriptor: Descriptor, depth: int, known: tuple[str, ...]) -> st.SearchStrategy:
    """A message of ``descriptor``, each field unset or filled by its type; nested
    messages recursively, unset past ``MAX_DEPTH``."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        return st.just(cls())
    parts = {}
    for field_ in descriptor.fields:
        entry = field_.message_type
        if entry is not None and entry.GetOptions().map_entry:
            keys = scalar(entry.fields_by_name["key"], known)
            values = value_of(entry.fields_by_name["value"], depth, known)
            parts[field_.name] = st.none() | st.dictionaries(keys, values, max_size=3)
        elif field_.is_repeated:
            parts[field_.name] = st.none() | repeated(field_, depth, known)
        else:
            parts[field_.name] = st.none() | value_of(field_, depth, known)
    return st.fixed_dictionaries(parts).map(lambda values: _build(cls, values))


def _build(cls, values: dict):
    built = cls()
    for name, value in values.items():
        if value is None:
            continue
        field_ = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(built, name) if field_.is_repeated else None
        if isinstance(value, dict):
            for key, item in value.items():
                if field_.message_type.fields_by_name["value"].message_type is not None:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif isinstance(value, list):
            target.extend(value)
        elif field_.message_type is not None:
            getattr(built, name).CopyFrom(value)
        else:
            setattr(built, name, value)
    return built


@dataclass(frozen=True)
class Call:
    caller: str
    requests: tuple  # one request, or the stream of a client-streaming RPC

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep them readable
        shown = [str(request)[:300] for request in self.requests]
        return f"Call(caller={self.caller!r}, requests={shown!r})"


def calls(rpc: Rpc, known: tuple[str, ...]) -> st.SearchStrategy[Call]:
    # Real ids only where a call cannot change anything: a hostile mutation stays
    # away from real data, so "the database is unchanged" has a precise meaning.
    pool = () if rpc.mutating else known
    requests = message(rpc.method.input_type, 0, pool)
    stream = st.lists(requests, min_size=1, max_size=3) if rpc.method.client_streaming else None
    return st.builds(
        lambda caller, body: Call(caller, tuple(body)),
        st.sampled_from(CALLERS),
        stream if stream is not None else requests.map(lambda request: [request]),
    )


# -- answers ----------------------------------------------------------------------------------


@dataclass
class Answer:
    code: grpc.StatusCode
    reason: str = ""
    details: str = ""


def error_info(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def invoke(channel: grpc.Channel, rpc: Rpc, token: str, call: Call) -> Answer:
    request_type = message_factory.GetMessageClass(rpc.method.input_type)
    response_type = message_factory.GetMessageClass(rpc.method.output_type)
    kind = (rpc.method.client_streaming, rpc.method.server_streaming)
    make = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[kind]
    stub = make(
        rpc.path,
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    metadata = (("authorization", f"Bearer {token}"),)
    body = iter(call.requests) if rpc.method.client_streaming else call.requests[0]
    try:
        if rpc.method.server_streaming:
            # The first answer or the error is enough; the stream may run for long.
            stream = stub(body, metadata=metadata, timeout=DEADLINE_SECONDS)
            try:
                next(stream, None)
            finally:
                stream.cancel()
        else:
            stub(body, metadata=metadata, timeout=DEADLINE_SECONDS)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.CANCELLED and rpc.method.server_streaming:
            return Answer(grpc.StatusCode.OK)
        return Answer(error.code(), error_info(error), error.details() or "")
    return Answer(grpc.StatusCode.OK)


def on_purpose(rpc: Rpc, call: Call, answer: Answer) -> bool:
    if answer.code == grpc.StatusCode.OK:
        return True
    if any(request.ByteSize() > DEFAULT_MAX_MESSAGE_BYTES for request in call.requests):
        # gRPC's own refusal of a message over the server's limit, before any handler.
        return answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    allowed = DELIBERATE | ({grpc.StatusCode.UNIMPLEMENTED} if rpc.name in DECLINED else set())
    return answer.code in allowed and bool(answer.reason)


# -- the database -----------------------------------------------------------------------------


async def _row_counts(dsn: str) -> Counter:
    connection = await asyncpg.connect(dsn)
    try:
        tables = await connection.fetch(
            """SELECT table_schema, table_name FROM information_schema.tables
               WHERE table_type = 'BASE TABLE'
                 AND table_schema NOT IN ('pg_catalog', 'information_schema')"""
        )
        counts = Counter()
        for row in tables:
            name = f"{row['table_schema']}.{row['table_name']}"
            counts[name] = await connection.fetchval(
                f'SELECT count(*) FROM "{row["table_schema"]}"."{row["table_name"]}"'
            )
        return counts
    finally:
        await connection.close()


def row_counts(dsn: str) -> Counter:
    return asyncio.run(_row_counts(dsn))


def settled_counts(dsn: str, quiet_seconds: float = 1.0, limit: float = 30.0) -> Counter:
    """Row counts once nothing has changed for ``quiet_seconds`` (audit records
    travel through the outbox and JetStream after the call has answered)."""
    deadline = time.monotonic() + limit
    last, since = row_counts(dsn), time.monotonic()
    while time.monotonic() - since < quiet_seconds:
        assert time.monotonic() < deadline, "the database never settled"
        time.sleep(0.25)
        now = row_counts(dsn)
        if now != last:
            last, since = now, time.monotonic()
    return last


def expected_writes(rpc: Rpc, answers: list[Answer]) -> tuple[Counter, Counter]:
    """(at most, at least) rows each table may gain from ``answers``."""
    most, least = Counter(), Counter()
    for answer in answers:
        outcome = "OK" if answer.code == grpc.StatusCode.OK else answer.reason
        for table, rows in WRITES.get(rpc.name, {}).get(outcome, {}).items():
            most[table] += rows
            if outcome in AUDITED_REFUSALS:
                least[table] += rows
    return most, least


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(stack) -> Iterator[dict[str, grpc.Channel]]:
    """Each served API service (by reflection) → a channel to the process serving it."""
    by_service, channels = {}, []
    for endpoint in stack.endpoints.values():
        channel = grpc.insecure_channel(endpoint.target, options=CHANNEL_OPTIONS)
        channels.append(channel)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        for answer in answers:
            for service in answer.list_services_response.service:
                if service.name not in INFRASTRUCTURE:
                    by_service[service.name] = channel
    yield by_service
    for channel in channels:
        channel.close()


@pytest.fixture(scope="module")
def known(stack) -> tuple[str, ...]:
    """Real ids (a small indexed collection, its source, operation and documents)
    and model names, so read-only calls get past "not found" into deeper code."""
    user = Client(stack, stack.tokens.clear["user"])
    try:
        root = stack.options.roots()[0] / f"hostile-{uuid.uuid4().hex[:8]}"
        write_text_corpus(root, 3, 60)
        created = user.create(f"hostile-{uuid.uuid4().hex[:6]}", config(), [directory(str(root))])
        user.finish(created.operation.id)
        collection = user.get(created.collection.id)
        documents = user.list_documents(collection.id)
        return (
            collection.id,
            *(source.id for source in collection.sources),
            created.operation.id,
            f"operations/{created.operation.id}",
            *(document.id for document in documents[:2]),
            "dev-user",
            "dev-admin",
            HASH_MODEL,
            MINILM,
            "hash-bow-256",
        )
    finally:
        user.close()


def test_every_served_service_is_covered(served) -> None:
    """A service a server serves but the generated stubs lack would escape the
    property below; and every generated service is served by some process."""
    generated = {rpc.method.containing_service.full_name for rpc in RPCS}
    assert set(served) == generated


def _regression(caller: str, request) -> Call:
    return Call(caller, (request,))


# Requests that once answered INTERNAL, kept as explicit examples.
REGRESSIONS: dict[str, list[Call]] = {
    # A Duration no timedelta holds (OverflowError in the servicer).
    "google.longrunning.Operations/WaitOperation": [
        _regression(
            "admin",
            operations_pb2.WaitOperationRequest(
                name="operations/x", timeout=duration_pb2.Duration(seconds=2**63 - 1)
            ),
        )
    ],
    # An error echoing a 1 MiB filter: trailers over gRPC's 16 KiB limit, so the
    # client got RESOURCE_EXHAUSTED "Stream removed" and no status at all.
    "google.longrunning.Operations/ListOperations": [
        _regression("admin", operations_pb2.ListOperationsRequest(filter="../" * 350_000))
    ],
    "vectorops.audit.v1.AuditService/ListAuditEvents": [
        # NUL reached Postgres (CharacterNotInRepertoireError).
        _regression("admin", audit_service_pb2.ListAuditEventsRequest(owner_id="a\x00b")),
        # Negative nanos: not a timestamp (ValueError in the servicer).
        _regression(
            "admin",
            audit_service_pb2.ListAuditEventsRequest(
                start_time=timestamp_pb2.Timestamp(nanos=-(2**31))
            ),
        ),
    ],
    # An estimate past int64 (INTERNAL where it was stored).
    "vectorops.resources.v1.ResourceService/Estimate": [
        _regression(
            "admin",
            resource_service_pb2.EstimateRequest(
                owner_id="o", document_count=2**63 - 2, dimension=2**31 - 1
            ),
        )
    ],
    "vectorops.resources.v1.ResourceService/Reserve": [
        _regression(
            "service",
            resource_service_pb2.ReserveRequest(
                owner_id="o",
                operation_id=str(uuid.UUID(int=1)),
                request_id="r",
                ttl=duration_pb2.Duration(seconds=-(2**63)),
                expire_time=timestamp_pb2.Timestamp(seconds=2**63 - 1),
            ),
        )
    ],
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name.rpartition(".")[2])
def test_hostile_requests_are_answered_on_purpose(rpc: Rpc, stack, served, known) -> None:
    channel = served[rpc.method.containing_service.full_name]
    tokens = stack.tokens.clear
    answers: list[tuple[Call, Answer]] = []

    def check(call: Call) -> None:
        answer = invoke(channel, rpc, tokens[call.caller], call)
        answers.append((call, answer))
        assert on_purpose(rpc, call, answer), (
            f"{rpc.name} answered {answer.code.name} {answer.reason!r}: {answer.details[:500]}"
        )
        assert not stack.exited(), f"a service died on {rpc.name}"

    for case in REGRESSIONS.get(rpc.name, ()):
        check = example(case)(check)
    run = settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        # No shrinking: every try is a call to a live stack; the failing example
        # is printed as it was drawn.
        phases=(Phase.explicit, Phase.generate),
        report_multiple_bugs=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )(given(calls(rpc, known))(check))

    dsn = stack.postgres_dsn
    before = settled_counts(dsn)
    run()
    outcomes = [answer for _, answer in answers]
    most, least = expected_writes(rpc, outcomes)
    if least:
        # Audited refusals: their records must arrive, through the outbox and the bus.
        deadline = time.monotonic() + 30
        while any(row_counts(dsn)[t] - before[t] < n for t, n in least.items()):
            assert time.monotonic() < deadline, f"audit records of {rpc.name} refusals missing"
            time.sleep(0.25)
    after = settled_counts(dsn)
    changed = {
        table: after[table] - before[table]
        for table in set(before) | set(after)
        if after[table] != before[table]
    }
    unexpected = {
        table: delta
        for table, delta in changed.items()
        if not (least[table] <= delta <= most[table])
    }
    tally = Counter(f"{a.code.name}:{a.reason}" for a in outcomes)
    assert not unexpected, f"{rpc.name} changed {unexpected} (answers {dict(tally)})"
    assert not stack.exited()
