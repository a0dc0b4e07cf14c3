"""PDF: the text of each page (pypdf), its page number, and the outline (bookmarks) as heading path.

A page whose text layer is empty but which shows images is most likely a
scan: it is left out and named in the build's report (OCR the file to index
it); a PDF with no text at all is skipped. An encrypted PDF that opens
without a password is read; one that needs a password, and a file pypdf
cannot parse (truncated, damaged), are refused with the fix. pypdf bounds
what a stream may inflate to (75 MB), which stops compression bombs. Text
is NFKC-normalized: PDFs draw ligatures such as "ﬁ" as one character.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from typing import Any

from kbrelease.chunking.formats.base import Extracted, ReadOptions, join_sections
from kbrelease.errors import InputFileError

# pypdf logs each repair it makes to a damaged file; the build reports what matters per file, so only its errors pass.
logging.getLogger("pypdf").setLevel(logging.ERROR)
_RESAVE = "open it in a PDF viewer and save or print it to a new PDF, or remove it from the source"


def read(data: bytes, options: ReadOptions, name: str) -> Extracted:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise InputFileError("the PDF is encrypted and needs a password to open; save a copy without a password, or remove it from the source")
        pages = [_page_text(page) for page in reader.pages]
    except DependencyError as exc:
        raise InputFileError(f"the PDF needs a decoder that is not installed ({exc}); {_RESAVE}") from exc
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        # pypdf reports damage as its own errors, and sometimes as the Python error the damage led to
        raise InputFileError(f"not a readable PDF, damaged or truncated ({type(exc).__name__}: {str(exc)[:160]}); {_RESAVE}") from exc
    starts = _outline_starts(reader)
    parts: list[tuple[tuple[str, ...], str, int | None]] = []
    scanned: list[int] = []
    path: tuple[str, ...] = ()
    for number, (text, has_images) in enumerate(pages, 1):
        if not text.strip():
            if has_images:
                scanned.append(number)
            continue
        # Cut the page where an outline entry that starts on it shows its title, so the text before it keeps the previous heading.
        rest = text
        for title, new_path in starts.get(number, []):
            found = re.search(r"\s+".join(map(re.escape, title.split())), rest)  # a long title may wrap onto two lines
            at = found.start() if found else 0
            parts.append((path, rest[:at], number))
            rest = rest[at:]
            path = new_path
        parts.append((path, rest, number))
    sections = join_sections(parts)
    notes: tuple[str, ...] = ()
    if scanned:
        were, them = ("were", "them") if len(scanned) > 1 else ("was", "it")
        notes = (f"{_pages(scanned)} no text layer (scanned images?) and {were} left out; OCR the PDF (e.g. ocrmypdf) to index {them}",)
    if not sections:
        empty = f"no text in the PDF ({_pages(scanned)} only images: a scan?); OCR it (e.g. ocrmypdf) to index it" if scanned else "no text in the PDF"
        return Extracted([], empty_reason=empty)
    return Extracted(sections, notes=notes)


def _page_text(page: Any) -> tuple[str, bool]:
    """The page's text, and whether it shows images (a page without text but with images is a scan)."""
    # NFKC: PDFs draw ligatures (ﬁ, ﬀ) as single characters the model's tokenizer does not know
    text = unicodedata.normalize("NFKC", page.extract_text() or "")
    if text.strip():
        return text, False
    try:
        return text, len(page.images) > 0
    except Exception:  # noqa: BLE001 - an unreadable image is still an image on a page without text
        return text, True


def _outline_starts(reader: Any) -> dict[int, list[tuple[str, tuple[str, ...]]]]:
    """Page number -> the outline entries starting on it, in order: (title, heading path)."""
    starts: dict[int, list[tuple[str, tuple[str, ...]]]] = {}

    def walk(items: list[Any], parents: tuple[str, ...]) -> None:
        last: tuple[str, ...] = parents
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            title = " ".join(unicodedata.normalize("NFKC", str(item.title or "")).split())
            page = reader.get_destination_page_number(item)
            last = (*parents, title)
            if title and page is not None and page >= 0:
                starts.setdefault(page + 1, []).append((title, last))

    try:
        walk(reader.outline, ())
    except Exception:  # noqa: BLE001 - a damaged outline costs the heading paths, not the text
        return {}
    return starts


def _pages(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:20]) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")
    return f"page {shown} has" if len(numbers) == 1 else f"pages {shown} have"
