"""Document ids, point ids, content hashes and the per-source document plan."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from indexer.domain.documents import (
    Duplicate,
    MediaType,
    content_hash,
    document_id,
    media_type_for,
    plan_documents,
    point_id,
)


def test_document_id_is_a_stable_uuid5_of_collection_source_and_path() -> None:
    first = document_id("col-1", "src-1", "docs/a.txt")
    assert uuid.UUID(first).version == 5
    # The same inputs give the same id in every operation and every process.
    assert first == document_id("col-1", "src-1", "docs/a.txt")
    others = {
        document_id("col-2", "src-1", "docs/a.txt"),
        document_id("col-1", "src-2", "docs/a.txt"),
        document_id("col-1", "src-1", "docs/b.txt"),
        # Parts cannot bleed into each other.
        document_id("col-1src-1", "", "docs/a.txt"),
        document_id("col-1", "src-1docs", "/a.txt"),
    }
    assert first not in others and len(others) == 5


def test_document_id_is_pinned() -> None:
    # Changing the namespace or the key encoding would orphan every stored point.
    assert document_id("c", "s", "p") == str(
        uuid.uuid5(uuid.UUID("6f0d8a52-3c1e-5b7a-9a43-2d1b6c0e7f10"), '["c", "s", "p"]')
    )


def test_point_ids_are_uuids_per_document_and_chunk() -> None:
    doc = document_id("c", "s", "a.txt")
    ids = [point_id(doc, i) for i in range(100)]
    assert len(set(ids)) == 100
    assert all(uuid.UUID(i).version == 5 for i in ids)
    assert ids[3] == point_id(doc, 3)
    assert point_id(document_id("c", "s", "b.txt"), 3) != ids[3]
    with pytest.raises(ValueError):
        point_id(doc, -1)


def test_content_hash_is_sha256_hex() -> None:
    assert content_hash(b"hello") == hashlib.sha256(b"hello").hexdigest()
    assert len(content_hash(b"")) == 64


def test_media_type_by_extension() -> None:
    assert media_type_for("a/B.PDF") is MediaType.PDF
    assert media_type_for("x.markdown") is MediaType.MARKDOWN
    assert media_type_for("x.htm") is MediaType.HTML
    assert media_type_for("x.docx") is MediaType.DOCX
    assert media_type_for("x.doc") is None
    assert media_type_for("README") is None


def test_plan_new_changed_unchanged_removed() -> None:
    previous = {"a.txt": "h1", "b.txt": "h2", "gone.txt": "h3"}
    current = {"a.txt": "h1", "b.txt": "h2-new", "c.txt": "h4"}
    plan = plan_documents(previous, current)
    assert plan.new == ("c.txt",)
    assert plan.changed == ("b.txt",)
    assert plan.unchanged == ("a.txt",)
    assert plan.removed == ("gone.txt",)
    assert plan.duplicates == ()
    assert plan.to_index == ("b.txt", "c.txt")


def test_first_run_and_rerun_on_unchanged_files() -> None:
    current = {"b": "h2", "a": "h1"}
    first = plan_documents({}, current)
    assert first.new == ("a", "b") and first.to_index == ("a", "b")
    again = plan_documents(current, current)
    assert again.to_index == () and again.unchanged == ("a", "b") and again.removed == ()


def test_empty_source_removes_everything() -> None:
    plan = plan_documents({"a": "h1", "b": "h2"}, {})
    assert plan.removed == ("a", "b") and plan.to_index == ()


def test_duplicates_within_the_source_and_across_the_collection() -> None:
    previous = {"keep.txt": "same"}
    current = {
        "keep.txt": "same",  # unchanged: it holds its hash first
        "a-copy.txt": "same",  # sorts before keep.txt, still the duplicate
        "x.txt": "hx",
        "y.txt": "hx",  # duplicate of x.txt (path order)
        "z.txt": "other-source-hash",
    }
    plan = plan_documents(previous, current, {"other-source-hash": "doc-42"})
    assert plan.duplicates == (
        Duplicate("a-copy.txt", "same", "keep.txt"),
        Duplicate("y.txt", "hx", "x.txt"),
        Duplicate("z.txt", "other-source-hash", "doc-42"),
    )
    # Duplicates are still indexed: each document keeps its own points.
    assert plan.to_index == ("a-copy.txt", "x.txt", "y.txt", "z.txt")
    assert plan.unchanged == ("keep.txt",)


def test_unchanged_documents_are_not_counted_as_duplicates_again() -> None:
    current = {"a": "h", "b": "h"}
    assert len(plan_documents({}, current).duplicates) == 1
    assert plan_documents(current, current).duplicates == ()
