"""The durability settings of the event bus, read back from a real nats-server
(README.md, "Durability"): every declared stream is file-backed, has the
configured replicas and a duplicate window that covers the outbox's redelivery
of a Nats-Msg-Id; the embedded server fsyncs every write."""

from __future__ import annotations

import json
import urllib.request

import pytest

from kit.bus.jetstream import JetStream
from kit.bus.topology import ALL_STREAMS
from kit.config import Settings
from kit.stack.nats import NatsServer

pytestmark = pytest.mark.integration

OUTBOX_DUPLICATE_WINDOW_SECONDS = 600  # the documented window


@pytest.fixture
def server(tmp_path):
    server = NatsServer(tmp_path / "nats", monitor_port=0)
    server.start()
    yield server
    server.stop()


async def test_declared_streams_have_the_documented_durability(server) -> None:
    defaults = Settings()
    assert (defaults.jetstream_storage, defaults.jetstream_replicas) == ("file", 1)
    bus = await JetStream.connect(
        server.url,
        name="durability-test",
        storage=defaults.jetstream_storage,
        replicas=defaults.jetstream_replicas,
    )
    try:
        await bus.ensure_streams(ALL_STREAMS)
        for spec in ALL_STREAMS:
            config = (await bus.js.stream_info(spec.name)).config
            assert config.storage == "file", spec.name
            assert config.num_replicas == 1, spec.name
            assert config.duplicate_window == OUTBOX_DUPLICATE_WINDOW_SECONDS, spec.name
            assert config.retention == spec.retention.value, spec.name
    finally:
        await bus.close()


def test_the_embedded_server_fsyncs_every_write(server) -> None:
    with urllib.request.urlopen(f"{server.monitor_url}/varz", timeout=10) as reply:
        jetstream = json.load(reply)["jetstream"]["config"]
    assert jetstream["sync_always"] is True
    assert jetstream["store_dir"].startswith(str(server.store_dir))
