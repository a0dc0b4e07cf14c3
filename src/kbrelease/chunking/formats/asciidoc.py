"""AsciiDoc: the text as written, with section titles as heading path, by one documented rule.

There is no maintained Python parser of today's AsciiDoc: Asciidoctor is
Ruby, and AsciiDoc.py describes itself as a legacy processor of an older
syntax (which can also run system commands unless put in safe mode). So only
the headings are recognized, by this rule, and the text is kept as written:

* a line ``= Title`` ... ``====== Title`` (one to six ``=``, a space, the
  title; trailing ``=`` are dropped) is a heading of level 0 to 5;
* except inside delimited blocks where text is literal: listing ``----``,
  literal ``....``, passthrough ``++++``, comment ``////`` and source fences
  `````` (a delimiter is four or more of the same character alone on a line,
  three backticks for a fence), and except ``//`` comment lines.
"""

from __future__ import annotations

import re

from kbrelease.chunking.formats.base import Extracted, ReadOptions, Section
from kbrelease.chunking.text import decode_text

_HEADING = re.compile(r"^(={1,6})[ \t]+(\S.*?)(?:[ \t]+=+)?[ \t]*$")
_LITERAL_DELIMITER = re.compile(r"^(-{4,}|\.{4,}|\+{4,}|/{4,}|```)[ \t]*$")


def read(data: bytes, options: ReadOptions, name: str) -> Extracted:
    decoded = decode_text(data, options.fallback_encoding)
    return Extracted([s for s in headed_sections(decoded.text) if s.text.strip()], encoding=decoded.encoding)


def headed_sections(text: str) -> list[Section]:
    """Sections of the text between headings, each with its heading path and offset in ``text``."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    open_block: str | None = None
    body_start = 0
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        here, offset = offset, offset + len(line)
        delimiter = _LITERAL_DELIMITER.match(stripped)
        if delimiter:
            mark = delimiter.group(1)
            if open_block is None:
                open_block = mark
            elif mark == open_block:
                open_block = None
            continue
        if open_block is not None or stripped.startswith("//"):
            continue
        heading = _HEADING.match(stripped)
        if heading:
            level = len(heading.group(1)) - 1
            sections.append(Section(text[body_start:here], tuple(t for _, t in path), body_start))
            path = [(lv, t) for lv, t in path if lv < level] + [(level, heading.group(2).strip())]
            body_start = offset
    sections.append(Section(text[body_start:], tuple(t for _, t in path), body_start))
    return sections
