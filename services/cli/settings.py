"""Where the CLI finds the services and its bearer token.

Precedence, highest first: command-line flags, environment variables, the
config file, the design's default ports. The addresses use the services' own
variables (``VECTOROPS_<SERVICE>_ADDRESS``, see kit.config), so a shell set up
for the services points the CLI at the same ones.

The config file is TOML: ``$VECTOROPS_CONFIG``, else
``$XDG_CONFIG_HOME/vectorops/config.toml`` (``~/.config/...`` by default)::

    token = "..."                 # or: token_file = "/path/to/a/file/holding/it"
    timeout_seconds = 30
    [addresses]
    orchestrator = "127.0.0.1:50051"
    indexer = "127.0.0.1:50052"
    resources = "127.0.0.1:50054"
    audit = "127.0.0.1:50055"
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cli.errors import UsageError
from kit.config import DEFAULT_GRPC_PORTS, ENV_PREFIX, ServiceName

TOKEN_ENV = f"{ENV_PREFIX}TOKEN"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
DEFAULT_TIMEOUT_SECONDS = 30.0

# The services the CLI calls; the embedder is internal to the others.
CLI_SERVICES = (
    ServiceName.ORCHESTRATOR,
    ServiceName.INDEXER,
    ServiceName.RESOURCES,
    ServiceName.AUDIT,
)
_TOP_KEYS = {"token", "token_file", "timeout_seconds", "addresses"}


@dataclass(frozen=True)
class Settings:
    token: str | None
    addresses: Mapping[ServiceName, str]
    timeout_seconds: float


def address_env(service: ServiceName) -> str:
    return f"{ENV_PREFIX}{service.value.upper()}_ADDRESS"


def config_path(explicit: str | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read, and whether it was asked for (then it must exist)."""
    chosen = explicit or environ.get(CONFIG_ENV)
    if chosen:
        return Path(chosen).expanduser(), True
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "vectorops" / "config.toml", False


def read_config(path: Path, required: bool) -> dict[str, object]:
    if not path.is_file():
        if required:
            raise UsageError(f"config file {path} does not exist")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as error:
        raise UsageError(f"config file {path}: {error}") from error
    unknown = set(data) - _TOP_KEYS
    addresses = data.get("addresses", {})
    if not isinstance(addresses, dict):
        raise UsageError(f"config file {path}: [addresses] must be a table")
    unknown |= {f"addresses.{key}" for key in set(addresses) - {s.value for s in CLI_SERVICES}}
    if unknown:
        raise UsageError(f"config file {path}: unknown keys {', '.join(sorted(unknown))}")
    return data


def resolve(
    *,
    flags: Mapping[ServiceName, str | None],
    timeout: float | None,
    config_flag: str | None,
    environ: Mapping[str, str],
) -> Settings:
    path, required = config_path(config_flag, environ)
    config = read_config(path, required)
    configured = config.get("addresses", {})
    assert isinstance(configured, dict)
    addresses = {
        service: flags.get(service)
        or environ.get(address_env(service))
        or str(configured.get(service.value) or "")
        or f"127.0.0.1:{DEFAULT_GRPC_PORTS[service]}"
        for service in CLI_SERVICES
    }
    return Settings(
        token=_token(config, path, environ),
        addresses=addresses,
        timeout_seconds=_timeout(timeout, config, path),
    )


def _token(config: Mapping[str, object], path: Path, environ: Mapping[str, str]) -> str | None:
    if environ.get(TOKEN_ENV, "").strip():
        return environ[TOKEN_ENV].strip()
    if isinstance(config.get("token"), str) and str(config["token"]).strip():
        return str(config["token"]).strip()
    token_file = config.get("token_file")
    if token_file:
        # Relative to the config file, so a config can sit next to its token.
        target = path.parent / Path(str(token_file)).expanduser()
        try:
            return target.read_text().strip() or None
        except OSError as error:
            raise UsageError(f"config file {path}: token_file: {error}") from error
    return None


def _timeout(flag: float | None, config: Mapping[str, object], path: Path) -> float:
    value = flag if flag is not None else config.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UsageError(f"timeout must be a positive number of seconds (config {path})")
    return float(value)
