"""Run-time bearer tokens through the real stack: an admin creates a user's
token on the orchestrator; with it the user works on the orchestrator and
searches on the indexer (another process, so the store is shared); once the
admin revokes it, every service refuses it within a couple of seconds. Postgres
holds its digest only, expired tokens are refused, non-admins cannot manage
tokens, and the audit log has the create and the revoke without the token."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import grpc
import pytest
from api import Client, Resources, config, directory, error_reason, eventually, request_id
from corpus import write_text_corpus
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from kit.auth import digest
from kit.config import ServiceName
from vectorops.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from vectorops.common.v1 import principal_pb2
from vectorops.embedder.v1 import embedder_service_pb2, embedder_service_pb2_grpc
from vectorops.orchestrator.v1 import (
    collection_service_pb2,
    token_service_pb2,
    token_service_pb2_grpc,
)
from vectorops.resources.v1 import resource_service_pb2, resource_service_pb2_grpc

pytestmark = pytest.mark.integration

REVOCATION_SECONDS = 3.0  # "about a second", with room for a loaded test machine


class Tokens:
    """TokenService with one caller's token."""

    def __init__(self, stack, token: str) -> None:
        self._channel = grpc.insecure_channel(stack.endpoints[ServiceName.ORCHESTRATOR].target)
        self.stub = token_service_pb2_grpc.TokenServiceStub(self._channel)
        self.metadata = (("authorization", f"Bearer {token}"),)

    def create(self, principal_id: str, ttl_seconds: int = 0, rid: str = "", role=None):
        return self.stub.CreateToken(
            token_service_pb2.CreateTokenRequest(
                principal_id=principal_id,
                role=principal_pb2.ROLE_USER if role is None else role,
                description="e2e laptop",
                ttl=duration_pb2.Duration(seconds=ttl_seconds) if ttl_seconds else None,
                request_id=rid or request_id(),
            ),
            metadata=self.metadata,
            timeout=30,
        )

    def list(self, principal_id: str = "", page_size: int = 0, page_token: str = ""):
        return self.stub.ListTokens(
            token_service_pb2.ListTokensRequest(
                principal_id=principal_id, page_size=page_size, page_token=page_token
            ),
            metadata=self.metadata,
            timeout=30,
        )

    def revoke(self, token_id: str):
        return self.stub.RevokeToken(
            token_service_pb2.RevokeTokenRequest(token_id=token_id, request_id=request_id()),
            metadata=self.metadata,
            timeout=30,
        )

    def close(self) -> None:
        self._channel.close()


class EveryService:
    """One cheap authenticated call per service, with a given token."""

    def __init__(self, stack, token: str, collection_id: str) -> None:
        self._channels = {s: grpc.insecure_channel(stack.endpoints[s].target) for s in ServiceName}
        self._client = Client(stack, token)
        self._collection_id = collection_id
        metadata = (("authorization", f"Bearer {token}"),)
        embedder = embedder_service_pb2_grpc.EmbedderServiceStub(
            self._channels[ServiceName.EMBEDDER]
        )
        resources = resource_service_pb2_grpc.ResourceServiceStub(
            self._channels[ServiceName.RESOURCES]
        )
        audit = audit_service_pb2_grpc.AuditServiceStub(self._channels[ServiceName.AUDIT])
        self.calls = {
            ServiceName.ORCHESTRATOR: lambda: self._client.collections.ListCollections(
                collection_service_pb2.ListCollectionsRequest(),
                metadata=metadata,
                timeout=10,
            ),
            ServiceName.INDEXER: lambda: self._client.search(self._collection_id, "alpha"),
            ServiceName.EMBEDDER: lambda: embedder.ListModels(
                embedder_service_pb2.ListModelsRequest(), metadata=metadata, timeout=10
            ),
            ServiceName.RESOURCES: lambda: resources.GetQuota(
                resource_service_pb2.GetQuotaRequest(), metadata=metadata, timeout=10
            ),
            ServiceName.AUDIT: lambda: audit.ListAuditEvents(
                audit_service_pb2.ListAuditEventsRequest(page_size=1),
                metadata=metadata,
                timeout=10,
            ),
        }

    def refusing(self) -> set[ServiceName]:
        """The services that answer UNAUTHENTICATED (any other answer: the token passed)."""
        refused = set()
        for service, call in self.calls.items():
            try:
                call()
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                    assert error.details() == "unknown or revoked token"
                    refused.add(service)
        return refused

    def close(self) -> None:
        self._client.close()
        for channel in self._channels.values():
            channel.close()


@pytest.fixture
def admin(stack):
    tokens = Tokens(stack, stack.tokens.clear["admin"])
    yield tokens
    tokens.close()


def _refused(call, code: grpc.StatusCode, reason: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refusal:
        call()
    assert refusal.value.code() == code, refusal.value.details()
    assert error_reason(refusal.value) == reason
    return refusal.value


def _field_violations(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            found = error_details_pb2.BadRequest()
            detail.Unpack(found)
            return [violation.field for violation in found.field_violations]
    return []


async def _row(dsn: str, token_id: str) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        return dict(await conn.fetchrow("SELECT * FROM auth.tokens WHERE id = $1", token_id))
    finally:
        await conn.close()


def test_a_created_token_works_everywhere_until_revoked(stack, admin, tmp_path) -> None:
    owner = f"tok-{uuid.uuid4().hex[:8]}"
    rid = request_id()
    created = admin.create(owner, rid=rid)
    bearer, token_id = created.bearer_token, created.token.id
    assert bearer and not created.replayed
    assert created.token.state == token_service_pb2.TOKEN_STATE_ACTIVE
    assert created.token.created_by == "dev-admin"
    # A retry makes no second token and cannot show the clear one again.
    retry = admin.create(owner, rid=rid)
    assert (retry.replayed, retry.bearer_token, retry.token.id) == (True, "", token_id)
    assert [t.id for t in admin.list(principal_id=owner).tokens] == [token_id]

    # Postgres holds the digest, never the clear token.
    row = asyncio.run(_row(stack.postgres_dsn, token_id))
    assert row["sha256"] == digest(bearer)
    assert all(bearer not in str(value) for value in row.values())

    # The user works on the orchestrator and searches on the indexer with it.
    user = Client(stack, bearer)
    root = stack.options.roots()[0] / f"tokens-{uuid.uuid4().hex[:8]}"
    write_text_corpus(root, 3, 50)
    made = user.create(f"tokens-{uuid.uuid4().hex[:6]}", config(), [directory(str(root))])
    user.finish(made.operation.id)
    listed = user.collections.ListCollections(
        collection_service_pb2.ListCollectionsRequest(), metadata=user.metadata, timeout=30
    )
    assert [c.id for c in listed.collections] == [made.collection.id]
    assert all(c.owner_id == owner for c in listed.collections)
    assert user.search(made.collection.id, "alpha").hits
    user.close()

    services = EveryService(stack, bearer, made.collection.id)
    try:
        assert services.refusing() == set()
        revoked = admin.revoke(token_id)
        assert revoked.token.state == token_service_pb2.TOKEN_STATE_REVOKED
        assert not revoked.replayed and admin.revoke(token_id).replayed
        started = time.monotonic()
        eventually(lambda: services.refusing() == set(ServiceName), REVOCATION_SECONDS)
        assert time.monotonic() - started < REVOCATION_SECONDS
    finally:
        services.close()

    # The audit log has both changes, by the admin, about the owner, without the token.
    reader = Resources(stack, stack.tokens.clear["admin"])
    try:
        for action in ("token.create", "token.revoke"):
            events = eventually(lambda a=action: reader.audit_events(owner, a), 30)
            assert len(events) == 1
            event = events[0]
            assert event.details["credential_id"] == token_id
            assert event.details["principal_id"] == owner
            assert event.principal_id == "dev-admin"
            text = event.SerializeToString()
            assert bearer.encode() not in text and digest(bearer).encode() not in text
    finally:
        reader.close()


def test_an_expired_token_is_refused(stack, admin) -> None:
    created = admin.create(f"exp-{uuid.uuid4().hex[:8]}", ttl_seconds=2)
    user = Client(stack, created.bearer_token)
    try:

        def refused() -> bool:
            try:
                user.collections.ListCollections(
                    collection_service_pb2.ListCollectionsRequest(),
                    metadata=user.metadata,
                    timeout=10,
                )
            except grpc.RpcError as error:
                return error.code() == grpc.StatusCode.UNAUTHENTICATED
            return False

        eventually(lambda: not refused(), 2)  # honoured first, then refused
        eventually(refused, 5)
    finally:
        user.close()
    listed = admin.list(principal_id=created.token.principal_id).tokens
    assert [t.state for t in listed] == [token_service_pb2.TOKEN_STATE_EXPIRED]


def test_only_admins_manage_tokens_and_bad_requests_are_refused(stack, admin) -> None:
    denied = grpc.StatusCode.PERMISSION_DENIED
    for name in ("user", "service"):
        other = Tokens(stack, stack.tokens.clear[name])
        try:
            _refused(lambda o=other: o.create("mallory"), denied, "PERMISSION_DENIED")
            _refused(lambda o=other: o.list(), denied, "PERMISSION_DENIED")
            _refused(lambda o=other: o.revoke(str(uuid.uuid4())), denied, "PERMISSION_DENIED")
        finally:
            other.close()
    assert not admin.list(principal_id="mallory").tokens

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    error = _refused(lambda: admin.create("bad id"), invalid, "INVALID_ARGUMENT")
    assert _field_violations(error) == ["principal_id"]
    error = _refused(
        lambda: admin.create("nobody", role=principal_pb2.ROLE_UNSPECIFIED),
        invalid,
        "INVALID_ARGUMENT",
    )
    assert _field_violations(error) == ["role"]
    _refused(lambda: admin.list(page_size=-1), invalid, "INVALID_ARGUMENT")
    _refused(lambda: admin.list(page_token="nonsense"), invalid, "INVALID_PAGE_TOKEN")
    _refused(lambda: admin.revoke(str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND, "TOKEN_NOT_FOUND")
    rid = request_id()
    admin.create("reuser", rid=rid)
    _refused(lambda: admin.create("reuser-2", rid=rid), invalid, "REQUEST_ID_REUSED")


def test_the_cli_creates_lists_and_revokes_tokens(stack, tmp_path) -> None:
    from test_cli import Cli

    cli = Cli(stack, tmp_path)
    admin_token = stack.tokens.clear["admin"]
    owner = f"cli-tok-{uuid.uuid4().hex[:8]}"
    made = cli.run("token", "create", owner, "--ttl", "1h", "--json", token=admin_token)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["bearer_token"] and created["token"]["role"] == "ROLE_USER"
    listed = cli.run("token", "list", "--principal", owner, "--json", token=admin_token)
    assert [t["id"] for t in json.loads(listed.stdout)] == [created["token"]["id"]]
    # The new token works for its user; a user cannot manage tokens (exit 5).
    assert cli.run("collections", "list", token=created["bearer_token"]).returncode == 0
    assert cli.run("token", "list", token=created["bearer_token"]).returncode == 5
    gone = cli.run("token", "revoke", created["token"]["id"], "--json", token=admin_token)
    assert json.loads(gone.stdout)["token"]["state"] == "TOKEN_STATE_REVOKED"
    eventually(
        lambda: cli.run("collections", "list", token=created["bearer_token"]).returncode == 5,
        REVOCATION_SECONDS + 5,
    )
