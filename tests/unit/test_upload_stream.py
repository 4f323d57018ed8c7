"""The rules of an UploadDocuments stream (orchestrator.domain.uploads): paths,
media types, documents cut out of chunks, hashes and limits."""

from __future__ import annotations

import hashlib

import pytest

from kit.errors import InvalidArgument, ResourceExhausted
from kit.media_types import MediaType, parse_media_type
from orchestrator.domain.uploads import (
    DOCUMENT_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    UploadChunk,
    UploadLimits,
    UploadStream,
    resolve_media_type,
    upload_path,
)

LIMITS = UploadLimits(document_bytes=100, total_bytes=1000, documents=3)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def corrupted_path(error: pytest.ExceptionInfo) -> str:
    assert isinstance(error.value, InvalidArgument)
    assert error.value.reason == "UPLOAD_CORRUPTED"
    return error.value.metadata["path"]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("a.txt", "a.txt"), ("guides//b.md", "guides/b.md"), ("./c/./d.pdf", "c/d.pdf")],
)
def test_paths_are_normalised(raw: str, clean: str) -> None:
    assert upload_path(raw) == clean


@pytest.mark.parametrize(
    "raw", ["", "/etc/passwd", "../up.txt", "a/../../b.txt", "a\x00b.txt", "dir/", ".", "a\\b.txt"]
)
def test_bad_paths_are_corrupted_uploads(raw: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        upload_path(raw)
    assert corrupted_path(error) == raw


def test_a_path_longer_than_1024_characters_is_refused() -> None:
    assert upload_path("a" * 1020 + ".txt") == "a" * 1020 + ".txt"
    with pytest.raises(InvalidArgument) as error:
        upload_path("a" * 1021 + ".txt")
    assert error.value.reason == "UPLOAD_CORRUPTED"


def test_media_type_is_declared_or_guessed_from_the_extension() -> None:
    assert resolve_media_type("", "notes/a.MD") is MediaType.MARKDOWN
    assert resolve_media_type("text/markdown; charset=utf-8", "README") is MediaType.MARKDOWN
    assert resolve_media_type("Application/PDF", "scan.bin") is MediaType.PDF
    assert resolve_media_type("", "tool.exe") is None
    assert resolve_media_type("image/png", "picture.txt") is None  # declared wins
    assert parse_media_type("text/x-markdown") is MediaType.MARKDOWN


def test_documents_are_cut_out_of_consecutive_chunks_with_their_hash() -> None:
    stream = UploadStream(LIMITS)
    first = stream.feed(UploadChunk("a.txt", b"hello "))
    assert first.keep and first.accepted is None
    done = stream.feed(UploadChunk("a.txt", b"world", last=True, sha256=sha(b"hello world")))
    assert done.keep and done.accepted is not None
    assert done.accepted.size_bytes == 11 and done.accepted.sha256 == sha(b"hello world")
    assert done.accepted.media_type is MediaType.TEXT
    other = stream.feed(UploadChunk("b.md", b"# b", last=True))
    assert other.accepted is not None and other.accepted.media_type is MediaType.MARKDOWN
    stream.end()
    assert (stream.documents_received, stream.bytes_received) == (2, 14)


def test_an_unsupported_type_is_rejected_and_the_upload_goes_on() -> None:
    stream = UploadStream(LIMITS)
    dropped = stream.feed(UploadChunk("tool.exe", b"MZ"))
    assert not dropped.keep and dropped.rejected is None
    end = stream.feed(UploadChunk("tool.exe", b"..", last=True))
    assert end.rejected is not None and end.rejected.reason == UNSUPPORTED_MEDIA_TYPE
    assert stream.feed(UploadChunk("a.txt", b"ok", last=True)).accepted is not None


def test_a_document_over_its_limit_is_rejected_once_it_passes_it() -> None:
    stream = UploadStream(LIMITS)
    assert stream.feed(UploadChunk("big.txt", b"x" * 60)).keep
    assert not stream.feed(UploadChunk("big.txt", b"x" * 60)).keep  # now 120 > 100
    assert not stream.feed(UploadChunk("big.txt", b"x" * 10)).keep
    end = stream.feed(UploadChunk("big.txt", b"", last=True))
    assert end.rejected is not None and end.rejected.reason == DOCUMENT_TOO_LARGE


def test_a_hash_that_does_not_match_is_a_corrupted_upload() -> None:
    stream = UploadStream(LIMITS)
    stream.feed(UploadChunk("a.txt", b"abc", sha256=sha(b"abd")))
    with pytest.raises(InvalidArgument) as error:
        stream.feed(UploadChunk("a.txt", b"", last=True))
    assert corrupted_path(error) == "a.txt"


def test_a_malformed_hash_is_a_corrupted_upload() -> None:
    with pytest.raises(InvalidArgument) as error:
        UploadStream(LIMITS).feed(UploadChunk("a.txt", b"abc", last=True, sha256="xyz"))
    assert corrupted_path(error) == "a.txt"


def test_interleaved_documents_are_a_corrupted_upload() -> None:
    stream = UploadStream(LIMITS)
    stream.feed(UploadChunk("a.txt", b"part one"))
    with pytest.raises(InvalidArgument) as error:
        stream.feed(UploadChunk("b.txt", b"other"))
    assert corrupted_path(error) == "b.txt"


def test_a_path_sent_twice_is_a_corrupted_upload() -> None:
    stream = UploadStream(LIMITS)
    stream.feed(UploadChunk("a.txt", b"one", last=True))
    with pytest.raises(InvalidArgument) as error:
        stream.feed(UploadChunk("./a.txt", b"two", last=True))
    assert corrupted_path(error) == "a.txt"


def test_a_stream_ending_inside_a_document_is_a_corrupted_upload() -> None:
    stream = UploadStream(LIMITS)
    stream.feed(UploadChunk("a.txt", b"no end"))
    with pytest.raises(InvalidArgument) as error:
        stream.end()
    assert corrupted_path(error) == "a.txt"


def test_more_bytes_than_one_call_may_carry_fail_the_call() -> None:
    stream = UploadStream(UploadLimits(document_bytes=100, total_bytes=150, documents=10))
    stream.feed(UploadChunk("a.txt", b"x" * 100, last=True))
    with pytest.raises(ResourceExhausted) as error:
        stream.feed(UploadChunk("b.txt", b"x" * 51))
    assert error.value.reason == "UPLOAD_TOO_LARGE"
    assert error.value.metadata == {"limit_bytes": "150"}


def test_more_documents_than_one_call_may_carry_fail_the_call() -> None:
    stream = UploadStream(LIMITS)
    for name in ("a.txt", "b.txt", "c.txt"):
        stream.feed(UploadChunk(name, b"x", last=True))
    with pytest.raises(ResourceExhausted) as error:
        stream.feed(UploadChunk("d.txt", b"x", last=True))
    assert error.value.reason == "UPLOAD_TOO_LARGE"
    assert error.value.metadata == {"limit_documents": "3"}
