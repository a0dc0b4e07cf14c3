"""DOCX: paragraphs and tables in document order (python-docx), Title and Heading 1-9 styles as heading path.

A DOCX is a zip archive. Before python-docx opens it (it reads every part
into memory), the archive's directory is checked: at most
:data:`MAX_ENTRIES` entries and at most ``ReadOptions.max_unpacked_bytes``
unpacked in all (a zip bomb is refused by name). The sizes checked are the
ones the directory declares, and they bind: Python's zipfile never returns
more bytes for an entry than its declared size. python-docx parses the XML
without resolving entities (no entity expansion bombs).
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from kbrelease.chunking.formats.base import UNPACK_FACTOR, Extracted, ReadOptions, join_sections
from kbrelease.errors import InputFileError

MAX_ENTRIES = 10_000
"""A DOCX with more zip entries is refused; Word's own files have tens, a few hundred with many images."""
_HEADING = re.compile(r"^heading ([1-9])$", re.IGNORECASE)
_RESAVE = "open it in Word or LibreOffice and save it again as .docx, or remove it from the source"


def read(data: bytes, options: ReadOptions, name: str) -> Extracted:
    check_archive(data, options.max_unpacked_bytes)
    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = Document(io.BytesIO(data))
        blocks = list(document.iter_inner_content())
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InputFileError(f"not a readable DOCX ({type(exc).__name__}: {str(exc)[:160]}); {_RESAVE}") from exc
    except Exception as exc:  # lxml's XMLSyntaxError and the like: damaged XML inside the archive
        raise InputFileError(f"not a readable DOCX, its XML is damaged ({type(exc).__name__}: {str(exc)[:160]}); {_RESAVE}") from exc
    parts: list[tuple[tuple[str, ...], str, int | None]] = []
    path: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush() -> None:
        parts.append((tuple(t for _, t in path), "\n\n".join(buf), None))
        buf.clear()

    for block in blocks:
        if hasattr(block, "rows"):
            buf.append(_table_text(block))
            continue
        text = block.text.strip()
        level = _heading_level(block)
        if level is None or not text:
            if text:
                buf.append(text)
            continue
        flush()
        path[:] = [(lv, t) for lv, t in path if lv < level] + [(level, " ".join(text.split()))]
    flush()
    sections = join_sections(parts)
    if not sections:
        return Extracted([], empty_reason="no text in the document")
    return Extracted(sections)


def check_archive(data: bytes, max_unpacked_bytes: int) -> None:
    """Refuse what is not a zip archive, and archives over the entry or unpacked-size limits, before anything is unpacked."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputFileError(
            f"not a DOCX: not a zip archive ({str(exc)[:120]}); a password-protected or old-style .doc file must be saved as .docx without a password"
        ) from exc
    if len(infos) > MAX_ENTRIES:
        raise InputFileError(f"the DOCX holds {len(infos)} zip entries, over the {MAX_ENTRIES} limit (a zip bomb?); {_RESAVE}")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > max_unpacked_bytes:
        raise InputFileError(
            f"the DOCX unpacks to {unpacked / 1048576:.0f} MB, over the {max_unpacked_bytes / 1048576:.0f} MB limit "
            f"({UNPACK_FACTOR}x text.max_file_mb; a zip bomb?); check the file, or raise text.max_file_mb if it is genuine"
        )


def _heading_level(paragraph: Any) -> int | None:
    """0 for the Title style, 1-9 for Heading 1-9, None for body text."""
    try:
        style = paragraph.style
    except Exception:  # noqa: BLE001 - a style python-docx cannot resolve is body text
        return None
    for _ in range(10):  # a custom style based on "Heading 2" is a heading 2 (bounded: a damaged file may loop)
        if style is None:
            return None
        name = (style.name or "").strip()
        if name.lower() == "title":
            return 0
        if match := _HEADING.match(name):
            return int(match.group(1))
        style = style.base_style
    return None


def _table_text(table: Any) -> str:
    """One line per row, cells separated by `` | `` (merged cells once)."""
    lines = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if not cells or cells[-1] != text:
                cells.append(text)
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)
