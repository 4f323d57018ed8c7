"""Bearer tokens → principals.

Tokens are never kept in clear: the service holds SHA-256 digests and compares
digests in constant time, so neither a config dump nor timing reveals a token.
Run-time tokens (``kit.tokens``) are looked up by digest in a dict instead:
what the lookup's timing could reveal is the SHA-256 of the presented string,
which tells nothing about any valid token (finding a token from its digest is
a preimage attack), and it keeps authentication O(1) however many tokens an
admin creates.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from kit.errors import PermissionDenied, Unauthenticated


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``id`` is the owner id for users, a name for admins and services."""

    id: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise PermissionDenied(
                f"this call needs the role {' or '.join(r.value for r in roles)}",
                reason="PERMISSION_DENIED",
                metadata={"role": self.role.value},
            )


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return "vo_" + secrets.token_urlsafe(32)


class TokenLookup(Protocol):
    """Run-time tokens by SHA-256 digest (``kit.tokens.cache.TokenCache``)."""

    def principal_for(self, presented_digest: bytes) -> Principal | None: ...


class TokenAuthenticator:
    """Maps a presented bearer token to its principal: the configured tokens
    first, then, if given, the run-time ones of ``lookup``."""

    def __init__(
        self, entries: Iterable[tuple[str, Principal]], lookup: TokenLookup | None = None
    ) -> None:
        self._entries = [(bytes.fromhex(sha), principal) for sha, principal in entries]
        self._lookup = lookup

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing bearer token", reason="UNAUTHENTICATED")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "authorization must be 'Bearer <token>'", reason="UNAUTHENTICATED"
            )
        presented = hashlib.sha256(token.strip().encode()).digest()
        found: Principal | None = None
        # Compare against every entry, so the time taken does not tell which one matched.
        for known, principal in self._entries:
            if hmac.compare_digest(known, presented):
                found = principal
        # Looked up even after a match, for the same reason.
        run_time = self._lookup.principal_for(presented) if self._lookup is not None else None
        found = found or run_time
        if found is None:
            raise Unauthenticated("unknown or revoked token", reason="UNAUTHENTICATED")
        return found
