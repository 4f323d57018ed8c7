"""A client in another language: tests/node/client.test.mjs drives the public API
from Node.js (@grpc/grpc-js, @grpc/proto-loader, straight from protos/) against
the shared stack. Node is part of the toolchain (`make test` runs `npm ci`), so
a missing node fails this test rather than skipping it."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from api import MINILM

from kit.config import ServiceName

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEST_FILE = ROOT / "tests" / "node" / "client.test.mjs"


def test_node_client_creates_watches_searches_and_reads_error_info(stack) -> None:
    node = shutil.which("node")
    assert node, "node is not on PATH: install Node.js (it also runs buf for `make test`)"
    assert (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run `npm ci` first"
    source = stack.options.roots()[0] / f"node-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "VECTOROPS_ORCHESTRATOR_ADDRESS": stack.endpoints[ServiceName.ORCHESTRATOR].target,
        "VECTOROPS_INDEXER_ADDRESS": stack.endpoints[ServiceName.INDEXER].target,
        "VECTOROPS_TOKEN": stack.tokens.clear["user"],
        "VECTOROPS_NODE_SOURCE_DIR": str(source),
        "VECTOROPS_NODE_MODEL": MINILM,
    }
    done = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(TEST_FILE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"node --test failed:\n{done.stdout}\n{done.stderr}"
    assert "pass 3" in done.stdout.replace("ℹ ", ""), done.stdout
