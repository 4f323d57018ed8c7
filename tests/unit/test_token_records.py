"""Run-time tokens: a request is checked field by field, a token's state follows
the clock, and the authenticator honours the run-time lookup next to the
configured tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kit.auth import Principal, Role, TokenAuthenticator, digest
from kit.errors import InvalidArgument, Unauthenticated
from kit.tokens.records import NewToken, StoredToken, TokenState

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _token(**changes) -> StoredToken:
    fields = {
        "id": "t-1",
        "principal_id": "alice",
        "role": Role.USER,
        "description": "",
        "created_at": NOW,
        "created_by": "ops",
    }
    return StoredToken(**{**fields, **changes})


def test_a_valid_request_is_kept_as_asked() -> None:
    new = NewToken.validated("alice", "user", "laptop", timedelta(hours=1), "r-1")
    assert (new.principal_id, new.role, new.description) == ("alice", Role.USER, "laptop")
    assert new.expires_at(NOW) == NOW + timedelta(hours=1)
    assert NewToken.validated("svc", "service", "", None, "r-2").expires_at(NOW) is None


@pytest.mark.parametrize(
    ("principal_id", "role", "description", "ttl", "request_id", "field"),
    [
        ("", "user", "", None, "r", "principal_id"),
        ("-alice", "user", "", None, "r", "principal_id"),
        ("a" * 129, "user", "", None, "r", "principal_id"),
        ("alice bob", "user", "", None, "r", "principal_id"),
        ("alice", "", "", None, "r", "role"),
        ("alice", "root", "", None, "r", "role"),
        ("alice", "user", "x" * 201, None, "r", "description"),
        ("alice", "user", "", timedelta(0), "r", "ttl"),
        ("alice", "user", "", timedelta(seconds=-5), "r", "ttl"),
        ("alice", "user", "", timedelta(days=3651), "r", "ttl"),
        ("alice", "user", "", None, " ", "request_id"),
    ],
)
def test_an_invalid_request_names_the_field(
    principal_id, role, description, ttl, request_id, field
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        NewToken.validated(principal_id, role, description, ttl, request_id)
    assert refused.value.reason == "INVALID_ARGUMENT"
    assert refused.value.metadata == {"field": field}
    assert [v.field for v in refused.value.field_violations] == [field]


def test_every_bad_field_is_reported() -> None:
    with pytest.raises(InvalidArgument) as refused:
        NewToken.validated("", "", "", None, "")
    fields = [v.field for v in refused.value.field_violations]
    assert fields == ["principal_id", "role", "request_id"]


def test_the_request_hash_tells_a_retry_from_another_request() -> None:
    first = NewToken.validated("alice", "user", "laptop", timedelta(hours=1), "r-1")
    retry = NewToken.validated("alice", "user", "laptop", timedelta(hours=1), "r-1")
    assert first.request_hash == retry.request_hash
    for other in (
        NewToken.validated("bob", "user", "laptop", timedelta(hours=1), "r-1"),
        NewToken.validated("alice", "admin", "laptop", timedelta(hours=1), "r-1"),
        NewToken.validated("alice", "user", "desk", timedelta(hours=1), "r-1"),
        NewToken.validated("alice", "user", "laptop", timedelta(hours=2), "r-1"),
        NewToken.validated("alice", "user", "laptop", None, "r-1"),
    ):
        assert other.request_hash != first.request_hash


def test_state_follows_expiry_and_revocation() -> None:
    assert _token().state(NOW) is TokenState.ACTIVE
    expiring = _token(expires_at=NOW + timedelta(seconds=1))
    assert expiring.state(NOW) is TokenState.ACTIVE
    assert expiring.state(NOW + timedelta(seconds=1)) is TokenState.EXPIRED
    revoked = _token(expires_at=NOW + timedelta(days=1), revoked_at=NOW, revoked_by="ops")
    assert revoked.state(NOW) is TokenState.REVOKED
    assert _token().principal == Principal("alice", Role.USER)


class _Lookup:
    def __init__(self, known: dict[bytes, Principal]) -> None:
        self.known = known

    def principal_for(self, presented_digest: bytes) -> Principal | None:
        return self.known.get(presented_digest)


def test_the_authenticator_honours_run_time_tokens_next_to_configured_ones() -> None:
    ops = Principal("ops", Role.ADMIN)
    carol = Principal("carol", Role.USER)
    lookup = _Lookup({bytes.fromhex(digest("carol-token")): carol})
    authenticator = TokenAuthenticator([(digest("ops-token"), ops)], lookup)
    assert authenticator.authenticate("Bearer ops-token") == ops
    assert authenticator.authenticate("Bearer carol-token") == carol
    lookup.known.clear()  # revoked
    with pytest.raises(Unauthenticated) as refused:
        authenticator.authenticate("Bearer carol-token")
    assert refused.value.message == "unknown or revoked token"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000)]
)
def test_the_cli_reads_a_ttl(text: str, seconds: int) -> None:
    from cli.commands.tokens import ttl

    assert ttl(text).seconds == seconds


def test_the_cli_refuses_a_ttl_it_cannot_read() -> None:
    import argparse

    from cli.commands.tokens import ttl

    with pytest.raises(argparse.ArgumentTypeError):
        ttl("soon")
