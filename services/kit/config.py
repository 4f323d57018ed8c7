"""Configuration from environment variables, all under the ``VECTOROPS_`` prefix.

Every variable is listed in the README. Values are validated at start-up so a
typo fails the process at once instead of at the first request.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kit.grpc.message_limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES_CEILING,
    MAX_MESSAGE_BYTES_FLOOR,
)
from kit.grpc.tls import TlsFiles, tls_files

ENV_PREFIX = "VECTOROPS_"

S = TypeVar("S", bound="Settings")


class ServiceName(StrEnum):
    ORCHESTRATOR = "orchestrator"
    INDEXER = "indexer"
    EMBEDDER = "embedder"
    RESOURCES = "resources"
    AUDIT = "audit"


# The design's fixed default ports, so recipes and dashboards agree.
DEFAULT_GRPC_PORTS = {
    ServiceName.ORCHESTRATOR: 50051,
    ServiceName.INDEXER: 50052,
    ServiceName.EMBEDDER: 50053,
    ServiceName.RESOURCES: 50054,
    ServiceName.AUDIT: 50055,
}
DEFAULT_METRICS_PORTS = {
    ServiceName.ORCHESTRATOR: 9101,
    ServiceName.INDEXER: 9102,
    ServiceName.EMBEDDER: 9103,
    ServiceName.RESOURCES: 9104,
    ServiceName.AUDIT: 9105,
}


class TokenEntry(BaseModel):
    """A bearer token known to the service, stored only as its SHA-256 hex digest."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    principal: str = Field(min_length=1)
    role: str = Field(pattern=r"^(user|admin|service)$")


class Settings(BaseSettings):
    """Settings shared by every service process.

    Ports left unset take the service's default; ``0`` binds a free port, and
    the bound ports are then written to ``ready_file`` for whoever started us.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    service: ServiceName | None = None
    grpc_host: str = "127.0.0.1"
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    # The largest gRPC message a server takes (larger: RESOURCE_EXHAUSTED), and the
    # bound of the channels a service opens to the others.
    grpc_max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES, ge=MAX_MESSAGE_BYTES_FLOOR, le=MAX_MESSAGE_BYTES_CEILING
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    postgres_pool_min: int = Field(default=1, ge=0)
    postgres_pool_max: int = Field(default=10, ge=1)

    nats_url: str = "nats://127.0.0.1:4222"
    # File storage so JetStream streams survive a nats-server restart.
    jetstream_storage: str = Field(default="file", pattern=r"^(file|memory)$")
    jetstream_replicas: int = Field(default=1, ge=1, le=5)

    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")
    # JSON list of {"sha256", "principal", "role"}; see kit.auth.
    auth_tokens: list[TokenEntry] = Field(default_factory=list)
    auth_tokens_file: Path | None = None

    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    outbox_batch_size: int = Field(default=100, ge=1)

    # Written once the service serves: {"service", "grpc_port", "metrics_port", "pid"}.
    ready_file: Path | None = None

    # Where the other services listen (host:port), for the calls one service makes
    # to another, and the bearer token (service role) it sends with them.
    orchestrator_address: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS[ServiceName.ORCHESTRATOR]}"
    indexer_address: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS[ServiceName.INDEXER]}"
    embedder_address: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS[ServiceName.EMBEDDER]}"
    resources_address: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS[ServiceName.RESOURCES]}"
    audit_address: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS[ServiceName.AUDIT]}"
    service_token: SecretStr | None = None
    service_token_file: Path | None = None

    # TLS for the gRPC servers and the calls between services (PEM files). With a
    # certificate and key, every server serves TLS only; with a CA as well, servers
    # require client certificates it signed (mTLS) and calls verify the servers
    # against it, presenting this certificate. Metrics stay plain HTTP.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None

    # Directories a directory source may lie in (JSON list, or paths joined by
    # ':'). Empty: no directory source is accepted, only uploads.
    source_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @field_validator("source_roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(":") if part]
        return value

    @model_validator(mode="after")
    def _tls_files_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(f"{ENV_PREFIX}TLS_CERT_FILE and {ENV_PREFIX}TLS_KEY_FILE go together")
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(f"{ENV_PREFIX}TLS_CA_FILE needs a certificate and key as well")
        return self

    def tls(self) -> TlsFiles | None:
        return tls_files(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    def outbound_token(self) -> str | None:
        """The service-role token this process presents to the other services."""
        if self.service_token is not None:
            return self.service_token.get_secret_value()
        if self.service_token_file is not None:
            return self.service_token_file.read_text().strip() or None
        return None

    def tokens(self) -> list[TokenEntry]:
        """Tokens from the environment plus those in ``auth_tokens_file``."""
        entries = list(self.auth_tokens)
        if self.auth_tokens_file is not None:
            raw = json.loads(self.auth_tokens_file.read_text())
            entries += [TokenEntry.model_validate(item) for item in raw]
        return entries

    def bound_grpc_port(self) -> int:
        return self.grpc_port if self.grpc_port is not None else DEFAULT_GRPC_PORTS[self._name()]

    def bound_metrics_port(self) -> int:
        if self.metrics_port is not None:
            return self.metrics_port
        return DEFAULT_METRICS_PORTS[self._name()]

    def _name(self) -> ServiceName:
        if self.service is None:
            raise ValueError(f"{ENV_PREFIX}SERVICE is not set")
        return self.service


def load_settings(service: ServiceName, settings_type: type[S] = Settings) -> S:  # type: ignore[assignment]
    """Read and validate the environment for ``service`` (a service may extend Settings)."""
    return settings_type(service=service)
