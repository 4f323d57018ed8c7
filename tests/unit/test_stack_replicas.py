"""How the launcher names, numbers and addresses the replicas of a service."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kit.config import ServiceName
from kit.stack.__main__ import _replica_counts
from kit.stack.launcher import Instance, Stack, StackOptions, _replica_port


def test_replica_counts_parse_lists_and_refuse_nonsense() -> None:
    assert _replica_counts("embedder=2, indexer=3") == {
        ServiceName.EMBEDDER: 2,
        ServiceName.INDEXER: 3,
    }
    assert _replica_counts("") == {}
    for bad in ("embedder", "cache=2", "indexer=two", "audit=0"):
        with pytest.raises(argparse.ArgumentTypeError):
            _replica_counts(bad)


def test_the_first_replica_keeps_the_service_name_and_port() -> None:
    assert Instance(ServiceName.INDEXER).name == "indexer"
    assert Instance(ServiceName.INDEXER, 1).name == "indexer-2"
    assert _replica_port(50052, 0) == 50052
    assert _replica_port(50052, 2) == 50252
    assert _replica_port(0, 3) == 0  # any free port stays any free port


def test_callers_get_every_replica_of_a_service(tmp_path: Path) -> None:
    options = StackOptions(data_dir=tmp_path, replicas={ServiceName.EMBEDDER: 3})
    assert options.instances(ServiceName.EMBEDDER) == tuple(
        Instance(ServiceName.EMBEDDER, n) for n in range(3)
    )
    stack = Stack(options)
    assert stack._address(ServiceName.EMBEDDER) == (
        "ipv4:127.0.0.1:50053,127.0.0.1:50153,127.0.0.1:50253"
    )
    assert stack._address(ServiceName.AUDIT) == "127.0.0.1:50055"
