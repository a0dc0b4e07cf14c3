"""What every format's reader returns, and the options it gets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path (and on one page, for a PDF)."""

    text: str
    heading_path: tuple[str, ...] = ()
    start: int = 0
    """Character offset of the section in the document's text: the decoded file for
    text formats (Markdown, reST, AsciiDoc, plain text), the extracted text for the others."""
    page: int | None = None


@dataclass(frozen=True)
class Extracted:
    """A document read by its format: sections in document order, ready to chunk."""

    sections: list[Section]
    markdown: bool = False
    """Cut with the Markdown-aware splitter (lists, code fences) rather than at paragraphs and sentences."""
    encoding: str = ""
    """How the bytes were decoded ('' for PDF and DOCX, which carry their own)."""
    notes: tuple[str, ...] = field(default=())
    """Parts of the file left out while the rest is indexed (a PDF's pages without text), each with its fix."""
    empty_reason: str = ""
    """Why no text came out, when none did (the file is then skipped with this reason)."""


UNPACK_FACTOR = 10
"""A zip-based document (DOCX) may unpack to this many times text.max_file_mb."""


@dataclass(frozen=True)
class ReadOptions:
    """What a reader needs from the configuration."""

    fallback_encoding: str = "latin-1"
    """text.fallback_encoding: tried for text formats that are neither UTF-8 nor UTF-16 with a BOM."""
    max_unpacked_bytes: int = UNPACK_FACTOR * 20 * 1024 * 1024
    """Most a zip-based document (DOCX) may unpack to: UNPACK_FACTOR x text.max_file_mb."""

    @classmethod
    def for_text(cls, fallback_encoding: str, max_file_mb: float) -> ReadOptions:
        """The options of a build whose text settings are ``text.fallback_encoding`` and ``text.max_file_mb``."""
        return cls(fallback_encoding, max_unpacked_bytes=int(max_file_mb * UNPACK_FACTOR * 1024 * 1024))


def join_sections(parts: list[tuple[tuple[str, ...], str, int | None]]) -> list[Section]:
    """Sections of extracted text, with offsets as if the parts were joined by blank lines; empty parts dropped."""
    out: list[Section] = []
    offset = 0
    for path, text, page in parts:
        if text.strip():
            out.append(Section(text, path, offset, page))
            offset += len(text) + 2
    return out
