"""Document formats: the bytes of a file become sections of text with their heading path (and page).

One small module per format, each a function ``read(data, options) -> Extracted``
built on a maintained parser (pypdf, BeautifulSoup, python-docx, docutils;
markdown-it for Markdown). This module is the one place that says which file
suffix is read by which module; the sources' suffix filter
(:data:`kbrelease.config.TEXT_SUFFIXES`) and the build both come from it.
Parsers are imported only when a file of their format is read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from kbrelease.chunking.formats.base import Extracted, ReadOptions, Section

__all__ = ["FORMATS", "SUFFIXES", "Extracted", "Format", "ReadOptions", "Section", "format_for", "read_document"]


@dataclass(frozen=True)
class Format:
    """A document format: its suffixes and the module whose ``read`` turns its bytes into sections."""

    name: str
    suffixes: tuple[str, ...]
    module: str
    """Module of this package with a ``read(data: bytes, options: ReadOptions) -> Extracted``."""
    keeps: str
    """What of the document is indexed (shown in the docs)."""


FORMATS: tuple[Format, ...] = (
    Format("text", (".txt",), "plain", "the text, cut at paragraphs"),
    Format("markdown", (".md",), "plain", "the text, with the headings (#, ##, ...) as heading path"),
    Format("pdf", (".pdf",), "pdf", "the text of every page, with its page number and the PDF's outline (bookmarks) as heading path"),
    Format(
        "html",
        (".html", ".htm"),
        "html",
        "the main content's text, with h1-h6 as heading path; scripts, styles, navigation, page header/footer and asides dropped",
    ),
    Format("docx", (".docx",), "word", "paragraphs and tables in document order, with the Title/Heading 1-9 styles as heading path"),
    Format("restructuredtext", (".rst",), "rest", "the text, with section titles as heading path (parsed by docutils; no includes, no raw)"),
    Format("asciidoc", (".adoc", ".asciidoc"), "asciidoc", "the text as written, with `=` ... `======` section titles as heading path"),
)
SUFFIXES: tuple[str, ...] = tuple(s for f in FORMATS for s in f.suffixes)
_BY_SUFFIX = {s: f for f in FORMATS for s in f.suffixes}


def format_for(relative_path: str) -> Format:
    """The format of a file, by its suffix (any case); a suffix no format reads falls back to plain text."""
    return _BY_SUFFIX.get(PurePosixPath(relative_path).suffix.lower(), FORMATS[0])


def read_document(relative_path: str, data: bytes, options: ReadOptions) -> Extracted:
    """The sections of one file, read by its format's module.

    Raises :class:`~kbrelease.errors.InputFileError` (the reason names the fix)
    for a file its format cannot read.
    """
    fmt = format_for(relative_path)
    module = importlib.import_module(f"{__name__}.{fmt.module}")
    result: Extracted = module.read(data, options, fmt.name)
    return result
