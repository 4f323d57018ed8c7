"""Settings come from VECTOROPS_* variables and are validated at start-up."""

import json

import pytest
from pydantic import ValidationError

from kit.auth import digest
from kit.config import DEFAULT_GRPC_PORTS, ServiceName, Settings, load_settings


def test_defaults_follow_the_design_port_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VECTOROPS_GRPC_PORT", raising=False)
    settings = load_settings(ServiceName.INDEXER)
    assert settings.bound_grpc_port() == DEFAULT_GRPC_PORTS[ServiceName.INDEXER] == 50052
    assert settings.bound_metrics_port() == 9102


def test_environment_overrides_and_port_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTOROPS_GRPC_PORT", "0")
    monkeypatch.setenv("VECTOROPS_NATS_URL", "nats://nats.example:4222")
    settings = load_settings(ServiceName.AUDIT)
    assert settings.bound_grpc_port() == 0
    assert settings.nats_url == "nats://nats.example:4222"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VECTOROPS_GRPC_PORT", "70000"),
        ("VECTOROPS_LOG_LEVEL", "chatty"),
        ("VECTOROPS_JETSTREAM_STORAGE", "tape"),
        ("VECTOROPS_GRPC_MAX_MESSAGE_BYTES", "1000"),
        ("VECTOROPS_GRPC_MAX_MESSAGE_BYTES", "4294967296"),
        ("VECTOROPS_GRPC_MAX_MESSAGE_BYTES", "lots"),
        ("VECTOROPS_AUTH_TOKENS", '[{"sha256": "nothex", "principal": "a", "role": "user"}]'),
        (
            "VECTOROPS_AUTH_TOKENS",
            '[{"sha256": "' + "a" * 64 + '", "principal": "a", "role": "root"}]',
        ),
    ],
)
def test_invalid_values_fail_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_tokens_from_environment_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    file = tmp_path / "tokens.json"
    file.write_text(json.dumps([{"sha256": digest("b"), "principal": "svc", "role": "service"}]))
    monkeypatch.setenv(
        "VECTOROPS_AUTH_TOKENS",
        json.dumps([{"sha256": digest("a"), "principal": "alice", "role": "user"}]),
    )
    monkeypatch.setenv("VECTOROPS_AUTH_TOKENS_FILE", str(file))
    tokens = Settings().tokens()
    assert [(t.principal, t.role) for t in tokens] == [("alice", "user"), ("svc", "service")]
