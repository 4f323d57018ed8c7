"""AIP-158 pagination: sizes, tokens, and tokens we never issued."""

import pytest

from kit.errors import InvalidArgument
from kit.grpc.pagination import page


def test_pages_walk_the_whole_list_once() -> None:
    items = list(range(7))
    seen, token = [], ""
    while True:
        chunk, token = page(items, 3, token)
        seen += chunk
        if not token:
            break
    assert seen == items


def test_default_size_and_last_page_has_no_token() -> None:
    chunk, token = page(list(range(5)), 0, "")
    assert chunk == [0, 1, 2, 3, 4] and token == ""


@pytest.mark.parametrize("token", ["garbage", "eDox", "bzotMQ=="])
def test_foreign_token_is_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page([1, 2], 1, token)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_negative_size_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        page([1], -1, "")
