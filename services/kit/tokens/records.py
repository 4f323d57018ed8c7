"""What a stored token is and what a valid request for a new one looks like.

Pure: no I/O, the clock is passed in. A token's state is computed at the time
of asking, so an expiry needs no writer.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from kit.auth import Principal, Role
from kit.errors import FieldViolation, InvalidArgument

MAX_DESCRIPTION_CHARS = 200
MAX_TTL = timedelta(days=3650)
_PRINCIPAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class TokenState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class StoredToken:
    """A token's row, without its digest: what may leave the store."""

    id: str
    principal_id: str
    role: Role
    description: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    def state(self, now: datetime) -> TokenState:
        if self.revoked_at is not None:
            return TokenState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return TokenState.EXPIRED
        return TokenState.ACTIVE

    @property
    def principal(self) -> Principal:
        return Principal(self.principal_id, self.role)


@dataclass(frozen=True)
class NewToken:
    """A CreateToken request, checked: ``validated`` refuses anything else."""

    principal_id: str
    role: Role
    description: str
    ttl: timedelta | None
    request_id: str

    @classmethod
    def validated(
        cls,
        principal_id: str,
        role: str,
        description: str,
        ttl: timedelta | None,
        request_id: str,
    ) -> NewToken:
        violations: list[FieldViolation] = []
        if not _PRINCIPAL_ID.match(principal_id):
            violations.append(
                FieldViolation(
                    "principal_id",
                    "1-128 letters, digits or ._:@- starting with a letter or digit",
                )
            )
        if role not in {r.value for r in Role}:
            violations.append(FieldViolation("role", "must be USER, ADMIN or SERVICE"))
        if len(description) > MAX_DESCRIPTION_CHARS:
            violations.append(
                FieldViolation("description", f"at most {MAX_DESCRIPTION_CHARS} characters")
            )
        if ttl is not None and not timedelta(seconds=1) <= ttl <= MAX_TTL:
            violations.append(FieldViolation("ttl", "from 1 second to 3650 days, or unset"))
        if not request_id.strip():
            violations.append(FieldViolation("request_id", "required"))
        if violations:
            raise InvalidArgument(
                f"invalid token request: {violations[0].field} {violations[0].description}",
                reason="INVALID_ARGUMENT",
                metadata={"field": violations[0].field},
                field_violations=violations,
            )
        return cls(principal_id, Role(role), description, ttl, request_id)

    @property
    def request_hash(self) -> str:
        """Tells a retry (same hash) from a reuse of its request_id for another request."""
        fields = [
            self.principal_id,
            self.role.value,
            self.description,
            None if self.ttl is None else self.ttl.total_seconds(),
        ]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    def expires_at(self, now: datetime) -> datetime | None:
        return None if self.ttl is None else now + self.ttl
