"""Plain text and Markdown: decoded as before, Markdown cut at its headings (markdown-it)."""

from __future__ import annotations

from kbrelease.chunking.formats.base import Extracted, ReadOptions, Section
from kbrelease.chunking.text import decode_text, markdown_sections


def read(data: bytes, options: ReadOptions, name: str) -> Extracted:
    decoded = decode_text(data, options.fallback_encoding)
    text = decoded.text
    if name != "markdown":
        return Extracted([Section(text)], encoding=decoded.encoding)
    sections = [Section(text[start:end], path, start) for path, start, end in markdown_sections(text)]
    return Extracted(sections, markdown=True, encoding=decoded.encoding)
