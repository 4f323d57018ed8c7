"""Shards and replicas of the collections the indexer creates on a Qdrant cluster:
from the ``VECTOROPS_INDEXER_QDRANT_*`` settings to the ``create_collection`` call.

Local mode (the stand-in for a server) accepts and drops the placement, so the
client here is a real local-mode client that also records what each create was
asked for."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from qdrant_client import AsyncQdrantClient

from indexer.adapters.qdrant_mapping import Placement
from indexer.adapters.qdrant_store import QdrantServerStore
from indexer.adapters.store_factory import open_vector_store
from indexer.config import IndexerSettings
from kit.config import ServiceName, load_settings


class RecordingClient(AsyncQdrantClient):
    """qdrant-client's local mode, keeping the keyword arguments of every create."""

    def __init__(self) -> None:
        super().__init__(location=":memory:")
        self.creates: list[dict[str, Any]] = []

    async def create_collection(self, collection_name: str, **kwargs: Any) -> bool:
        self.creates.append(kwargs)
        return await super().create_collection(collection_name, **kwargs)


def _indexer_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> IndexerSettings:
    monkeypatch.setenv("VECTOROPS_INDEXER_QDRANT_URL", "http://qdrant.invalid:6334")
    for name, value in env.items():
        monkeypatch.setenv(f"VECTOROPS_INDEXER_QDRANT_{name}", value)
    return load_settings(ServiceName.INDEXER, IndexerSettings)


def test_the_settings_reach_the_server_store(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _indexer_settings(
        monkeypatch, SHARD_NUMBER="3", REPLICATION_FACTOR="2", WRITE_CONSISTENCY_FACTOR="2"
    )
    store = open_vector_store(settings).inner  # type: ignore[attr-defined]
    assert isinstance(store, QdrantServerStore)
    assert store.placement == Placement(
        shard_number=3, replication_factor=2, write_consistency_factor=2
    )


def test_unset_settings_leave_the_server_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_vector_store(_indexer_settings(monkeypatch)).inner  # type: ignore[attr-defined]
    assert store.placement.create_options() == {}


async def test_a_new_collection_is_created_with_the_placement() -> None:
    client = RecordingClient()
    placement = Placement(replication_factor=2, write_consistency_factor=1)
    store = QdrantServerStore(client, placement=placement)
    assert await store.create_collection("docs_v1", 8)
    # Idempotent: a second create finds the collection and makes nothing.
    assert not await store.create_collection("docs_v1", 8)
    assert len(client.creates) == 1
    assert client.creates[0]["replication_factor"] == 2
    assert client.creates[0]["write_consistency_factor"] == 1
    assert "shard_number" not in client.creates[0]
    await store.close()


async def test_without_a_placement_the_create_names_none() -> None:
    client = RecordingClient()
    store = QdrantServerStore(client)
    await store.create_collection("docs_v1", 8)
    assert not {"shard_number", "replication_factor", "write_consistency_factor"} & set(
        client.creates[0]
    )
    await store.close()


def test_a_write_consistency_above_the_copies_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        Placement(replication_factor=2, write_consistency_factor=3)
    settings = _indexer_settings(monkeypatch, WRITE_CONSISTENCY_FACTOR="2")
    with pytest.raises(ValueError, match="exceeds"):
        open_vector_store(settings)


def test_a_replication_factor_below_one_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        _indexer_settings(monkeypatch, REPLICATION_FACTOR="0")
