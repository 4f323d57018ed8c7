"""Development tokens: created once per data folder and reused by later runs.

The clear tokens go to a 0600 file for the developer; the services only ever
see their SHA-256 digests (``VECTOROPS_AUTH_TOKENS_FILE``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from kit.auth import digest, new_token

# principal, role of each development token.
DEV_PRINCIPALS = {
    "admin": ("dev-admin", "admin"),
    "service": ("vectorops-service", "service"),
    "user": ("dev-user", "user"),
}


@dataclass(frozen=True)
class DevTokens:
    clear: dict[str, str]  # name → token
    hashes_file: Path


def ensure_dev_tokens(folder: Path) -> DevTokens:
    folder.mkdir(parents=True, exist_ok=True)
    clear_file = folder / "dev-tokens.json"
    hashes_file = folder / "token-hashes.json"
    if clear_file.exists():
        clear = json.loads(clear_file.read_text())
    else:
        clear = {name: new_token() for name in DEV_PRINCIPALS}
        descriptor = os.open(clear_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(clear, out, indent=2)
    entries = [
        {"sha256": digest(clear[name]), "principal": principal, "role": role}
        for name, (principal, role) in DEV_PRINCIPALS.items()
    ]
    hashes_file.write_text(json.dumps(entries, indent=2))
    return DevTokens(clear=clear, hashes_file=hashes_file)
