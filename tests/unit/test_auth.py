"""Bearer tokens map to principals; anything else is UNAUTHENTICATED."""

import pytest

from kit.auth import Principal, Role, TokenAuthenticator, digest, new_token
from kit.errors import Code, PermissionDenied, Unauthenticated

ALICE = Principal("alice", Role.USER)
ADMIN = Principal("ops", Role.ADMIN)


@pytest.fixture
def authenticator() -> TokenAuthenticator:
    return TokenAuthenticator([(digest("alice-token"), ALICE), (digest("admin-token"), ADMIN)])


def test_known_token_gives_its_principal(authenticator: TokenAuthenticator) -> None:
    assert authenticator.authenticate("Bearer alice-token") == ALICE
    assert authenticator.authenticate("bearer admin-token") == ADMIN


@pytest.mark.parametrize(
    "header", [None, "", "alice-token", "Basic alice-token", "Bearer ", "Bearer wrong"]
)
def test_missing_malformed_or_unknown_token_is_refused(
    authenticator: TokenAuthenticator, header: str | None
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        authenticator.authenticate(header)
    assert caught.value.code is Code.UNAUTHENTICATED
    assert caught.value.reason == "UNAUTHENTICATED"


def test_role_requirement() -> None:
    ADMIN.require(Role.ADMIN)
    with pytest.raises(PermissionDenied) as caught:
        ALICE.require(Role.ADMIN, Role.SERVICE)
    assert caught.value.metadata == {"role": "user"}


def test_new_tokens_are_unique_and_long() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(token) > 40 for token in tokens)
