"""Fixtures for tests against a real Triton server (the nvidia-pytriton wheel's binary)
serving deploy/triton/model_repository: one server per session, as MiniLM takes
10-20 s to load on a small CPU. Import the fixtures into a test module (or a conftest)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from embedder.adapters.triton_client import TritonClient
from embedder.adapters.triton_host import TritonHost

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def triton_host() -> Iterator[TritonHost]:
    """tritonserver with all_minilm_l6_v2 and hash_bow (dimension 384) on a free port."""
    work_dir = Path(tempfile.mkdtemp(prefix="vo-triton-"))
    host = TritonHost(work_dir)
    host.start()
    yield host
    host.stop()
    shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def triton_client(triton_host: TritonHost) -> AsyncIterator[TritonClient]:
    """An async client of the session's Triton."""
    client = TritonClient(triton_host.url)
    yield client
    await client.close()
