"""Secrets never leave a request: through the real stack, requests whose inputs
carry secrets (bearer tokens in metadata, ``password=…`` and ``api_key=…`` in a
token's and a collection's description, in a cancel reason, in a source path,
a model name and extra metadata headers), some of them refused, then a search
of everything the stack wrote: every service's log file, every message
published on NATS while they ran and every message left in every JetStream
stream, and every audit and outbox row of every Postgres schema. None holds a
clear token or a secret value; the logs do not hold a token's SHA-256 either.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import asyncpg
import grpc
import nats
import pytest
from api import Client, Resources, config, directory, eventually, request_id
from corpus import write_text_corpus
from google.protobuf import field_mask_pb2
from nats.js.errors import NotFoundError

from kit.auth import digest
from kit.config import ServiceName
from vectorops.common.v1 import principal_pb2
from vectorops.orchestrator.v1 import (
    collection_service_pb2,
    operation_service_pb2,
    orchestrator_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)

pytestmark = pytest.mark.integration


class NatsTap:
    """Every message published on the stack's NATS while it runs (a core
    subscription to ``>``, so work-queue messages consumed since are seen too),
    then every message still stored in every JetStream stream."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.messages: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc = self._run(nats.connect(url))
        self._run(self._nc.subscribe(">", cb=self._keep))
        self._run(self._nc.flush())

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    async def _keep(self, msg) -> None:
        self.messages.append(_message_bytes(msg.subject, msg.headers, msg.data))

    def stored(self) -> list[bytes]:
        return self._run(self._stored())

    async def _stored(self) -> list[bytes]:
        js = self._nc.jetstream()
        found = []
        for info in await js.streams_info():
            state = info.state
            if not state.messages:
                continue
            for sequence in range(state.first_seq, state.last_seq + 1):
                try:
                    msg = await js.get_msg(info.config.name, sequence)
                except NotFoundError:
                    continue  # consumed from a work queue, or deleted
                found.append(_message_bytes(msg.subject, msg.headers, msg.data))
        return found

    def close(self) -> None:
        self._run(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _message_bytes(subject: str, headers: dict | None, data: bytes | None) -> bytes:
    head = "".join(f"{key}: {value}\n" for key, value in (headers or {}).items())
    return subject.encode() + b"\n" + head.encode() + (data or b"")


async def _audit_and_outbox_rows(dsn: str) -> dict[str, list[bytes]]:
    """Every row of every audit and outbox table of every schema, column by column."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            " AND (table_name LIKE '%audit%' OR table_name LIKE '%outbox%')"
        )
        found = {}
        for table in tables:
            name = f'"{table["table_schema"]}"."{table["table_name"]}"'
            rows = await conn.fetch(f"SELECT * FROM {name}")  # noqa: S608 - names from the catalogue
            found[name] = [
                b"\x00".join(
                    value if isinstance(value, bytes) else str(value).encode()
                    for value in row.values()
                )
                for row in rows
            ]
        return found
    finally:
        await conn.close()


def _leaks(blobs: dict[str, list[bytes]], needles: dict[str, str]) -> list[str]:
    return [
        f"{what} in {where}"
        for where, items in blobs.items()
        for what, needle in needles.items()
        if any(needle.encode() in item for item in items)
    ]


def _refused(call) -> grpc.StatusCode:
    """The code ``call`` is refused with; OK if it is not."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _log_files(stack) -> dict[str, list[bytes]]:
    folder: Path = stack.options.data_dir / "logs"
    files = {str(path): [path.read_bytes()] for path in sorted(folder.rglob("*")) if path.is_file()}
    assert {f"{s.value}.log" for s in ServiceName} <= {Path(p).name for p in files}
    return files


@pytest.fixture
def tap(stack):
    listening = NatsTap(stack.nats_url)
    yield listening
    listening.close()


def test_secrets_reach_no_log_event_or_audit_row(stack, tap) -> None:
    marker = uuid.uuid4().hex
    password = f"hunter2-{marker}"
    api_key = str(uuid.uuid4())
    secret_text = f"ops note password={password} api_key={api_key}"
    bogus = f"vo_bogus{uuid.uuid4().hex}"
    owner = f"hygiene-{marker[:8]}"
    admin_token = stack.tokens.clear["admin"]
    admin = Client(stack, admin_token)
    channel = grpc.insecure_channel(stack.endpoints[ServiceName.ORCHESTRATOR].target)
    tokens = token_service_pb2_grpc.TokenServiceStub(channel)
    created = tokens.CreateToken(
        token_service_pb2.CreateTokenRequest(
            principal_id=owner,
            role=principal_pb2.ROLE_USER,
            description=secret_text,
            request_id=request_id(),
        ),
        metadata=admin.metadata,
        timeout=30,
    )
    bearer = created.bearer_token
    user = Client(stack, bearer)
    # Secrets in extra headers, beside the bearer token.
    user.metadata += (("x-api-key", api_key), ("x-note", f"password={password}"))
    try:
        # A new token reaches every service's cache within about a second.
        eventually(
            lambda: (
                _refused(
                    lambda: user.collections.ListCollections(
                        collection_service_pb2.ListCollectionsRequest(),
                        metadata=user.metadata,
                        timeout=10,
                    )
                )
                is grpc.StatusCode.OK
            ),
            10,
        )
        root = stack.options.roots()[0] / f"hygiene-{marker[:8]}"
        write_text_corpus(root, 2, 40)
        made = user.collections.CreateCollection(
            collection_service_pb2.CreateCollectionRequest(
                collection=orchestrator_pb2.Collection(
                    name=f"hygiene-{marker[:6]}", description=secret_text, config=config()
                ),
                sources=[directory(str(root))],
                request_id=request_id(),
            ),
            metadata=user.metadata,
            timeout=30,
        )
        user.finish(made.operation.id)
        collection_id = made.collection.id
        user.collections.UpdateCollection(
            collection_service_pb2.UpdateCollectionRequest(
                collection=orchestrator_pb2.Collection(
                    id=collection_id, description=f"{secret_text} (again)"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                request_id=request_id(),
            ),
            metadata=user.metadata,
            timeout=30,
        )
        assert user.search(collection_id, "vector search").hits
        # A cancel of a finished operation, with the secret as its reason.
        try:
            user.operations.CancelOperation(
                operation_service_pb2.CancelOperationRequest(
                    operation_id=made.operation.id, reason=secret_text, request_id=request_id()
                ),
                metadata=user.metadata,
                timeout=30,
            )
        except grpc.RpcError:
            pass  # refused or not, the reason must not be kept in clear
        # Refused requests carrying secrets.
        outside = f"/nonexistent/password={password}/api_key={api_key}"
        assert (
            _refused(
                lambda: user.create(f"hygiene-bad-{marker[:6]}", config(), [directory(outside)])
            )
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert _refused(
            lambda: user.reindex(collection_id, config(model=f"password={password}"))
        ) in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        stranger = Client(stack, bogus)
        assert _refused(lambda: stranger.get(collection_id)) == grpc.StatusCode.UNAUTHENTICATED
        # A real token under the wrong scheme is refused, and not logged either.
        stranger.metadata = (("authorization", f"Basic {admin_token}"),)
        assert _refused(lambda: stranger.get(collection_id)) == grpc.StatusCode.UNAUTHENTICATED
        stranger.close()
        # Revoked: the real token refused, and that refusal logged.
        tokens.RevokeToken(
            token_service_pb2.RevokeTokenRequest(
                token_id=created.token.id, request_id=request_id()
            ),
            metadata=admin.metadata,
            timeout=30,
        )
        eventually(
            lambda: _refused(lambda: user.get(collection_id)) is grpc.StatusCode.UNAUTHENTICATED, 10
        )
        # Everything has gone through the outboxes to the audit log.
        reader = Resources(stack, admin_token)
        try:
            eventually(lambda: reader.audit_events(owner, "operation.start"), 30)
            eventually(lambda: reader.audit_events(owner, "token.revoke"), 30)
        finally:
            reader.close()
    finally:
        user.close()
        admin.close()
        channel.close()

    clear = {f"the {name} dev token": token for name, token in stack.tokens.clear.items()}
    clear |= {"a run-time token": bearer, "a bogus token": bogus}
    secrets = {"the password": password, "the api key": api_key}
    digests = {f"the SHA-256 of {what}": digest(token) for what, token in clear.items()}

    events = {"NATS (published)": tap.messages, "JetStream (stored)": tap.stored()}
    assert events["NATS (published)"], "the tap saw nothing: is it on the stack's NATS?"
    rows = asyncio.run(_audit_and_outbox_rows(stack.postgres_dsn))
    assert any(rows.values()), "no audit or outbox rows found"
    logs = _log_files(stack)

    leaks = _leaks(logs, clear | secrets | digests)
    leaks += _leaks(events, clear | secrets | digests)
    leaks += _leaks(rows, clear | secrets | digests)
    assert not leaks, "\n".join(leaks)
    # The search itself works: the harmless parts of the same inputs are there.
    assert any(collection_id.encode() in item for items in logs.values() for item in items)
    assert any(marker[:6].encode() in item for item in events["NATS (published)"])
    assert any(owner.encode() in item for items in rows.values() for item in items)
    # The description reached the audit log, its secrets redacted.
    assert any(b"password=<redacted>" in item for item in rows['"audit"."audit_events"'])
