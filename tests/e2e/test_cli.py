"""The `vectorops` executable against the running stack, as an operator uses it:
create a collection from a directory and watch it to COMPLETED, search it, read
it back as JSON, and the exit codes and reasons of the ways a call can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from api import MINILM
from corpus import FIRST_SOURCE, SECOND_SOURCE, write_source

from kit.config import ServiceName

pytestmark = pytest.mark.integration

EXECUTABLE = Path(sys.executable).parent / "vectorops"
NOT_FOUND, INVALID_ARGUMENT, AUTH = 3, 4, 5


class Cli:
    """Runs the installed `vectorops` script with the stack's addresses."""

    def __init__(self, stack, home: Path) -> None:
        assert EXECUTABLE.exists(), f"{EXECUTABLE} missing: `pip install -e .` installs it"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("VECTOROPS_") and key not in ("HOME", "XDG_CONFIG_HOME")
        }
        # No developer config file leaks in: the config dir is empty.
        self.env |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config")}
        for service in (ServiceName.ORCHESTRATOR, ServiceName.INDEXER, ServiceName.RESOURCES):
            self.env[f"VECTOROPS_{service.value.upper()}_ADDRESS"] = stack.endpoints[service].target
        self.env["VECTOROPS_AUDIT_ADDRESS"] = stack.endpoints[ServiceName.AUDIT].target

    def run(self, *args: str, token: str | None, timeout: float = 240):
        env = dict(self.env)
        if token is not None:
            env["VECTOROPS_TOKEN"] = token
        done = subprocess.run(
            [str(EXECUTABLE), *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        print(f"$ vectorops {' '.join(args)}  -> {done.returncode}\n{done.stdout}{done.stderr}")
        return done


@pytest.fixture
def cli(stack, tmp_path) -> Cli:
    return Cli(stack, tmp_path)


@pytest.fixture
def user(stack) -> str:
    return stack.tokens.clear["user"]


def test_create_watch_search_and_read_back(stack, cli, user) -> None:
    root = stack.options.roots()[0] / f"cli-{uuid.uuid4().hex[:8]}"
    probes = write_source(root / "first", FIRST_SOURCE)
    second = write_source(root / "second", SECOND_SOURCE)
    name = f"cli-{uuid.uuid4().hex[:6]}"

    created = cli.run(
        "collections", "create", name, "--source", str(root / "first"),
        "--model", MINILM, "--chunk-size", "128", "--chunk-overlap", "16", "--json",
        token=user,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    collection_id, operation_id = body["collection"]["id"], body["operation"]["id"]
    assert body["operation"]["type"] == "OPERATION_TYPE_INDEX"

    # Not a terminal: one plain line per change, then the summary.
    watched = cli.run("operations", "watch", operation_id, token=user)
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.strip().splitlines()
    progress = [line for line in lines if "%" in line and "step " in line]
    assert progress and all("checkpoint " in line for line in progress), lines
    assert progress[-1].startswith("COMPLETED") and "100.0%" in progress[-1]
    assert f"operation {operation_id} (INDEX) COMPLETED" in lines[-1]
    assert f"{len(FIRST_SOURCE)} documents" in lines[-1]

    for probe in probes[:2]:
        found = cli.run("search", collection_id, probe.query, "--top-k", "3", token=user)
        assert found.returncode == 0, found.stderr
        header, first_hit = found.stdout.splitlines()[:2]
        assert header.split()[:3] == ["#", "SCORE", "PATH"]
        assert probe.path in first_hit.split(), found.stdout
        assert "generation 1" in found.stdout.splitlines()[-1]

    shown = cli.run("collections", "get", collection_id, "--json", token=user)
    assert shown.returncode == 0, shown.stderr
    collection = json.loads(shown.stdout)
    assert collection["status"] == "COLLECTION_STATUS_READY"
    assert int(collection["document_count"]) == len(FIRST_SOURCE)
    human = cli.run("collections", "get", collection_id, token=user).stdout
    assert "status:" in human and "READY" in human and str(root / "first") in human

    listed = cli.run("collections", "list", "--prefix", name, token=user)
    assert listed.returncode == 0 and name in listed.stdout and "READY" in listed.stdout
    operations = json.loads(
        cli.run("--json", "operations", "list", "--collection", collection_id, token=user).stdout
    )
    assert [(o["id"], o["status"]) for o in operations] == [
        (operation_id, "OPERATION_STATUS_COMPLETED")
    ]

    # A second source, followed with --watch; its files are then found too.
    appended = cli.run("sources", "add", collection_id, str(root / "second"), "--watch", token=user)
    assert appended.returncode == 0, appended.stderr
    assert "(APPEND) COMPLETED" in appended.stdout.strip().splitlines()[-1]
    found = cli.run("search", collection_id, second[0].query, "--json", token=user)
    assert json.loads(found.stdout)["hits"][0]["path"] == second[0].path

    renamed = cli.run(
        "collections", "update", collection_id, "--description", "from the CLI", token=user
    )
    assert renamed.returncode == 0 and "from the CLI" in renamed.stdout

    deleted = cli.run("collections", "delete", collection_id, "--watch", token=user)
    assert deleted.returncode == 0, deleted.stderr
    gone = cli.run("collections", "get", collection_id, token=user)
    assert gone.returncode == NOT_FOUND


def test_failures_exit_with_their_class_and_reason(stack, cli, user, tmp_path) -> None:
    missing = str(uuid.uuid4())
    refused = cli.run("collections", "get", missing, token=user)
    assert refused.returncode == NOT_FOUND
    assert "error: NOT_FOUND" in refused.stderr
    assert "reason: COLLECTION_NOT_FOUND (vectorops.dev)" in refused.stderr
    assert f"collection_id: {missing}" in refused.stderr

    as_json = cli.run("operations", "get", missing, "--json", token=user)
    assert as_json.returncode == NOT_FOUND
    error = json.loads(as_json.stderr)
    assert (error["code"], error["reason"]) == ("NOT_FOUND", "OPERATION_NOT_FOUND")

    anonymous = cli.run("collections", "list", token=None)
    assert anonymous.returncode == AUTH
    assert "error: UNAUTHENTICATED" in anonymous.stderr and "VECTOROPS_TOKEN" in anonymous.stderr
    forged = cli.run("collections", "list", token="not-a-token")
    assert forged.returncode == AUTH and "reason: UNAUTHENTICATED" in forged.stderr

    outside = tmp_path / "outside"
    outside.mkdir()
    escaped = cli.run("collections", "create", "escape", "--source", str(outside), token=user)
    assert escaped.returncode == INVALID_ARGUMENT
    assert "reason: INVALID_SOURCE_PATH" in escaped.stderr

    # A user may not set quotas.
    denied = cli.run("quota", "set", "dev-user", "--vectors", "10", token=user)
    assert denied.returncode == AUTH and "PERMISSION_DENIED" in denied.stderr

    usage = cli.run("collections", "update", missing, token=user)
    assert usage.returncode == 2 and "nothing to update" in usage.stderr

    # The token from a config file, when the environment has none.
    config = tmp_path / "vectorops.toml"
    config.write_text(f'token = "{user}"\n')
    from_file = cli.run("--config", str(config), "collections", "list", "--json", token=None)
    assert from_file.returncode == 0, from_file.stderr
    assert isinstance(json.loads(from_file.stdout), list)


def test_admin_quota_and_audit(stack, cli) -> None:
    admin = stack.tokens.clear["admin"]
    owner = f"cli-owner-{uuid.uuid4().hex[:6]}"
    set_ = cli.run(
        "quota", "set", owner, "--vectors", "5000", "--collections", "unlimited", token=admin
    )
    assert set_.returncode == 0, set_.stderr
    quota = json.loads(cli.run("quota", "get", owner, "--json", token=admin).stdout)["quota"]
    assert quota["owner_id"] == owner and int(quota["max_vectors"]) == 5000
    assert "max_collections" not in quota
    shown = cli.run("quota", "get", owner, token=admin).stdout
    assert any(line.split()[:2] == ["vectors", "5000"] for line in shown.splitlines()), shown

    verified = cli.run("audit", "verify", token=admin)
    assert verified.returncode == 0, verified.stderr
    assert "chain:" in verified.stdout and "intact" in verified.stdout
    # Audit records travel over JetStream: the first may take a moment to land.
    deadline = time.monotonic() + 30
    while True:
        listed = cli.run("audit", "list", "--limit", "5", "--json", token=admin)
        assert listed.returncode == 0, listed.stderr
        events = json.loads(listed.stdout)
        if events or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert 0 < len(events) <= 5 and all("hash" in event for event in events)
    table = cli.run("audit", "list", "--limit", "5", token=admin).stdout.splitlines()
    assert table[0].split()[:3] == ["SEQ", "TIME", "ACTION"] and len(table) == len(events) + 1
