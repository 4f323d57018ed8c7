"""The document types vectorops can extract, by media type and by extension.

Shared by the indexer (what a directory source indexes, how a document is
read) and the orchestrator (which uploads it accepts): the orchestrator must
refuse at upload what the indexer could not extract, without importing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import PurePosixPath


class MediaType(StrEnum):
    TEXT = "text/plain"
    MARKDOWN = "text/markdown"
    HTML = "text/html"
    PDF = "application/pdf"
    DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


# By lowercased extension; what a directory source indexes by default.
MEDIA_TYPES_BY_EXTENSION: Mapping[str, MediaType] = {
    ".txt": MediaType.TEXT,
    ".text": MediaType.TEXT,
    ".md": MediaType.MARKDOWN,
    ".markdown": MediaType.MARKDOWN,
    ".html": MediaType.HTML,
    ".htm": MediaType.HTML,
    ".pdf": MediaType.PDF,
    ".docx": MediaType.DOCX,
}

# Names clients commonly send for the same types.
_ALIASES: Mapping[str, MediaType] = {
    "text/x-markdown": MediaType.MARKDOWN,
    "application/xhtml+xml": MediaType.HTML,
}


def media_type_for(path: str) -> MediaType | None:
    """The media type a path's extension claims, or None when unsupported."""
    return MEDIA_TYPES_BY_EXTENSION.get(PurePosixPath(path).suffix.lower())


def parse_media_type(text: str) -> MediaType | None:
    """A declared media type (``type/subtype``, any case, parameters such as
    ``; charset=utf-8`` ignored), or None when it is not one we extract."""
    essence = text.split(";", 1)[0].strip().lower()
    try:
        return MediaType(essence)
    except ValueError:
        return _ALIASES.get(essence)
