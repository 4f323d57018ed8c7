"""Text extraction: a document's bytes to sections of plain text, with pages
where the format has them (an adapter: it uses pypdf, python-docx,
BeautifulSoup/lxml and markdown-it).

The type comes from the extension, checked against the content: a ``.pdf`` that
is not a PDF is a CORRUPT_DOCUMENT, and PDF or DOCX content under another name
is read as what it is. Any failure is an ``ExtractionError`` with a reason, never
another exception: the operation records the document as failed and goes on.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from indexer.domain.chunking import Section
from indexer.domain.documents import MediaType, media_type_for
from kit.media_types import parse_media_type


class ExtractionFailure(StrEnum):
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    CORRUPT_DOCUMENT = "CORRUPT_DOCUMENT"
    EMPTY_DOCUMENT = "EMPTY_DOCUMENT"


@dataclass
class ExtractionError(Exception):
    reason: ExtractionFailure
    message: str

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class ExtractedDocument:
    media_type: MediaType
    sections: tuple[Section, ...]  # none blank; a PDF has one per page with text
    title: str | None = None
    # What went wrong without failing the document (e.g. one unreadable PDF page).
    warnings: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        return "\n\n".join(section.text for section in self.sections)


_PDF_MAGIC = b"%PDF-"
_ZIP_MAGIC = b"PK\x03\x04"


def extract(data: bytes, path: str, declared: str = "") -> ExtractedDocument:
    """Extract the text of the document ``path``: its name decides the claimed
    type, unless ``declared`` names one (an upload's media type)."""
    media_type = detect_media_type(data, path, declared)
    if not data or data.isspace():  # no copy of a large file
        raise ExtractionError(ExtractionFailure.EMPTY_DOCUMENT, "the document is empty")
    document = _EXTRACTORS[media_type](data)
    if not document.sections:
        raise ExtractionError(ExtractionFailure.EMPTY_DOCUMENT, "the document has no text")
    return document


def detect_media_type(data: bytes, path: str, declared: str = "") -> MediaType:
    claimed = parse_media_type(declared) if declared else media_type_for(path)
    is_pdf = data[:1024].lstrip()[:5] == _PDF_MAGIC
    if is_pdf:
        return MediaType.PDF
    if claimed is MediaType.PDF and data:
        raise ExtractionError(ExtractionFailure.CORRUPT_DOCUMENT, "not a PDF (no %PDF- header)")
    if data.startswith(_ZIP_MAGIC) and (claimed is MediaType.DOCX or _is_docx(data)):
        return MediaType.DOCX
    if claimed is MediaType.DOCX and data:
        raise ExtractionError(ExtractionFailure.CORRUPT_DOCUMENT, "not a DOCX (not a zip file)")
    if claimed is None:
        raise ExtractionError(
            ExtractionFailure.UNSUPPORTED_MEDIA_TYPE, f"unsupported file type: {path!r}"
        )
    return claimed


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _sections(*texts: tuple[str, int | None]) -> tuple[Section, ...]:
    return tuple(Section(text=t, page=p) for t, p in texts if t.strip())


# --- text --------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> str:
    """Decode a text file: a BOM's encoding, else UTF-8, else Windows-1252, else
    Latin-1, which maps every byte and so never fails."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if b"\x00" in data:
        raise ExtractionError(ExtractionFailure.CORRUPT_DOCUMENT, "binary data in a text file")
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _text(data: bytes) -> ExtractedDocument:
    text = decode_text(data).replace("\r\n", "\n")
    return ExtractedDocument(MediaType.TEXT, _sections((text, None)))


# --- markdown ----------------------------------------------------------------


def _markdown(data: bytes) -> ExtractedDocument:
    from markdown_it import MarkdownIt

    # Rendered, then read as HTML: the text keeps headings, lists, code and
    # tables, and loses the markup (#, **, link targets) that only adds noise.
    html = MarkdownIt("commonmark").enable("table").render(decode_text(data))
    text, title = _html_text(html)
    return ExtractedDocument(MediaType.MARKDOWN, _sections((text, None)), title=title)


# --- html --------------------------------------------------------------------

_INVISIBLE = (
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "canvas",
    "iframe",
    "object",
    "head",
)
_BLOCKS = (
    "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
    "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul", "td", "th", "caption",
)  # fmt: skip
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


def _html_text(markup: str | bytes) -> tuple[str, str | None]:
    """Visible text of an HTML document, one line per block, and its title."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "lxml")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else None
    for tag in soup.find_all(_INVISIBLE):
        tag.decompose()
    for tag in soup.find_all(
        lambda t: t.has_attr("hidden") or _HIDDEN_STYLE.search(t.get("style") or "")
    ):
        tag.decompose()
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    for tag in soup.find_all(_BLOCKS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    lines = (_SPACES.sub(" ", line).strip() for line in soup.get_text().splitlines())
    body = "\n".join(line for line in lines if line)
    if title and not body.startswith(title):
        body = f"{title}\n\n{body}"
    return body, title or None


def _html(data: bytes) -> ExtractedDocument:
    text, title = _html_text(data)
    return ExtractedDocument(MediaType.HTML, _sections((text, None)), title=title)


# --- pdf ---------------------------------------------------------------------


def _pdf(data: bytes) -> ExtractedDocument:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError(ExtractionFailure.CORRUPT_DOCUMENT, "the PDF is encrypted")
        pages = list(reader.pages)
        title = reader.metadata.title if reader.metadata else None
    except ExtractionError:
        raise
    except Exception as exc:  # pypdf raises many types on broken files
        raise ExtractionError(
            ExtractionFailure.CORRUPT_DOCUMENT, f"unreadable PDF: {type(exc).__name__}"
        ) from exc
    texts: list[tuple[str, int | None]] = []
    warnings: list[str] = []
    for number, page in enumerate(pages, start=1):
        try:
            texts.append((page.extract_text() or "", number))
        except Exception as exc:  # one bad page does not lose the others
            warnings.append(f"page {number}: {type(exc).__name__}")
    if pages and len(warnings) == len(pages):
        raise ExtractionError(ExtractionFailure.CORRUPT_DOCUMENT, "no page of the PDF is readable")
    sections = _sections(*texts)
    if not sections:
        # Typically a scanned PDF: images, no text layer (we do no OCR).
        raise ExtractionError(ExtractionFailure.EMPTY_DOCUMENT, "the PDF has no text layer")
    return ExtractedDocument(
        MediaType.PDF, sections, title=str(title) if title else None, warnings=tuple(warnings)
    )


# --- docx --------------------------------------------------------------------


def _docx(data: bytes) -> ExtractedDocument:
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        lines: list[str] = []
        for block in document.iter_inner_content():  # paragraphs and tables, in order
            if isinstance(block, Table):
                lines.extend(_table_rows(block))
            else:
                lines.append(block.text)
        title = document.core_properties.title or None
    except Exception as exc:  # zipfile, lxml, KeyError, python-docx's own errors
        raise ExtractionError(
            ExtractionFailure.CORRUPT_DOCUMENT, f"unreadable DOCX: {type(exc).__name__}"
        ) from exc
    text = "\n".join(line for line in lines if line.strip())
    return ExtractedDocument(MediaType.DOCX, _sections((text, None)), title=title)


def _table_rows(table) -> list[str]:  # noqa: ANN001
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            # A merged cell is repeated once per grid column it spans.
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(cell.text.strip())
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


_EXTRACTORS: dict[MediaType, Callable[[bytes], ExtractedDocument]] = {
    MediaType.TEXT: _text,
    MediaType.MARKDOWN: _markdown,
    MediaType.HTML: _html,
    MediaType.PDF: _pdf,
    MediaType.DOCX: _docx,
}
