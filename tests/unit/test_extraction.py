"""Extraction from real small files built here: txt, md, html, a 2-page PDF, a
docx, and the failures (corrupt, empty, unsupported) an operation records."""

from __future__ import annotations

import io

import pytest
from corpus import pdf_bytes as _pdf

from indexer.domain.documents import MediaType
from indexer.extraction import ExtractionError, ExtractionFailure, decode_text, extract


def _docx() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = "Quarterly report"
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew in every region.")
    table = document.add_table(rows=2, cols=3)
    for col, value in enumerate(["Region", "Q1", "Q2"]):
        table.cell(0, col).text = value
    table.cell(1, 0).text = "North"
    merged = table.cell(1, 1).merge(table.cell(1, 2))
    merged.text = "steady"
    document.add_paragraph("")
    document.add_paragraph("Closing remarks after the table.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _fails(data: bytes, path: str, reason: ExtractionFailure) -> None:
    with pytest.raises(ExtractionError) as info:
        extract(data, path)
    assert info.value.reason is reason
    assert info.value.message


def test_pdf_text_per_page_with_page_numbers() -> None:
    document = extract(_pdf(["Alpha page text", "Beta page text"], "Greek letters"), "a.pdf")
    assert document.media_type is MediaType.PDF
    assert [(s.text.strip(), s.page) for s in document.sections] == [
        ("Alpha page text", 1),
        ("Beta page text", 2),
    ]
    assert document.title == "Greek letters"


def test_pdf_blank_page_is_dropped_but_numbers_kept() -> None:
    document = extract(_pdf(["first", " ", "third"]), "a.pdf")
    assert [s.page for s in document.sections] == [1, 3]


def test_docx_paragraphs_and_tables_in_order() -> None:
    document = extract(_docx(), "report.docx")
    assert document.media_type is MediaType.DOCX
    assert document.title == "Quarterly report"
    assert len(document.sections) == 1 and document.sections[0].page is None
    assert document.text.splitlines() == [
        "Quarterly report",
        "Revenue grew in every region.",
        "Region | Q1 | Q2",
        "North | steady",
        "Closing remarks after the table.",
    ]


def test_html_visible_text_only_with_title() -> None:
    html = b"""<!doctype html><html><head><title>Solar panels</title>
    <style>body { color: red }</style><script>var secret = "tracking";</script></head>
    <body><h1>How <b>solar</b> works</h1><p>Photons free electrons.<br>Current flows.</p>
    <noscript>enable js</noscript><div hidden>hidden text</div>
    <p style="display: none">invisible</p><ul><li>one</li><li>two</li></ul>
    <script>alert("x")</script></body></html>"""
    document = extract(html, "page.html")
    assert document.media_type is MediaType.HTML
    assert document.title == "Solar panels"
    assert document.text.splitlines() == [
        "Solar panels",
        "",
        "How solar works",
        "Photons free electrons.",
        "Current flows.",
        "one",
        "two",
    ]
    for gone in ("secret", "color", "alert", "enable js", "hidden text", "invisible"):
        assert gone not in document.text


def test_markdown_stays_readable() -> None:
    md = "# Title\n\nSome **bold** and [a link](http://x.test).\n\n- item\n\n```\ncode()\n```\n"
    document = extract(md.encode(), "notes.md")
    assert document.media_type is MediaType.MARKDOWN
    assert document.text.splitlines() == [
        "Title",
        "Some bold and a link.",
        "item",
        "code()",
    ]


def test_text_encodings_never_crash() -> None:
    assert extract("héllo wörld".encode(), "a.txt").text == "héllo wörld"
    assert extract("héllo".encode("cp1252"), "a.txt").text == "héllo"
    assert extract("\ufeffbom text".encode(), "a.txt").text == "bom text"
    assert extract("utf sixteen".encode("utf-16"), "a.txt").text == "utf sixteen"
    assert extract(b"crlf\r\nlines", "a.TXT").text == "crlf\nlines"
    # Bytes undefined in cp1252 fall back to Latin-1, which maps every byte.
    assert decode_text(b"\x81\x8d ok") == "\x81\x8d ok"


def test_corrupt_documents() -> None:
    _fails(b"this is not a pdf", "fake.pdf", ExtractionFailure.CORRUPT_DOCUMENT)
    _fails(
        b"%PDF-1.4\n garbage without structure", "broken.pdf", ExtractionFailure.CORRUPT_DOCUMENT
    )
    _fails(_pdf(["x"])[:60], "truncated.pdf", ExtractionFailure.CORRUPT_DOCUMENT)
    _fails(b"not a zip", "fake.docx", ExtractionFailure.CORRUPT_DOCUMENT)
    _fails(b"PK\x03\x04 broken zip", "broken.docx", ExtractionFailure.CORRUPT_DOCUMENT)
    _fails(b"bin\x00ary\x00", "data.txt", ExtractionFailure.CORRUPT_DOCUMENT)


def test_empty_documents() -> None:
    for name in ("empty.txt", "empty.md", "empty.html", "empty.pdf", "empty.docx"):
        _fails(b"", name, ExtractionFailure.EMPTY_DOCUMENT)
    _fails(b"  \n\t ", "blank.txt", ExtractionFailure.EMPTY_DOCUMENT)
    _fails(b"<html><script>x()</script></html>", "s.html", ExtractionFailure.EMPTY_DOCUMENT)
    _fails(_pdf([" "]), "blank.pdf", ExtractionFailure.EMPTY_DOCUMENT)


def test_unsupported_types() -> None:
    _fails(b"a,b\n1,2\n", "data.csv", ExtractionFailure.UNSUPPORTED_MEDIA_TYPE)
    _fails(b"\x89PNG\r\n", "image.png", ExtractionFailure.UNSUPPORTED_MEDIA_TYPE)
    _fails(b"text", "README", ExtractionFailure.UNSUPPORTED_MEDIA_TYPE)


def test_content_decides_over_a_wrong_name() -> None:
    assert extract(_pdf(["sniffed"]), "download.bin").media_type is MediaType.PDF
    assert extract(_docx(), "report").media_type is MediaType.DOCX
    assert extract(_pdf(["mislabelled"]), "notes.txt").media_type is MediaType.PDF
