"""Plain text and Markdown: decoded as before, Markdown cut at its headings (markdown-it)."""

from __future__ import annotations

from kbrelease.chunking.formats.base import Extracted, ReadOptions, Section
from kbrelease.chunking.text import decode_text, markdown_sections


def read(data: bytes, options: ReadOptions, name: str) -> Extracted:
    decoded = decode_text(data, options.fallback_encoding)
    text = decoded.text
    if name != "markdown":
        return Extracted([Section(text)], encoding=decoded.encoding)
    from kbrelease.sources.metadata import split_front_matter

    # Front matter is metadata (read at sync), not text: cut what follows it, offsets still in the whole text.
    body_at = split_front_matter(text)[1]
    body = text[body_at:]
    sections = [Section(body[start:end], path, body_at + start) for path, start, end in markdown_sections(body)]
    return Extracted(sections, markdown=True, encoding=decoded.encoding)
