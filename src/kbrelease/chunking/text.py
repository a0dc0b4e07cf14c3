"""Text files → chunks that fit the embedding model.

Decoding: UTF-8 (BOM or not), UTF-16 with BOM, else the configured fallback
with a warning. Binary files (NUL bytes), empty files and files over the size
limit are refused with :class:`InputFileError`.

Chunking: paragraphs are kept whole where they fit and merged up to a target
size; longer paragraphs are split at sentence boundaries. Sizes are counted in
the embedding model's own tokens (all-MiniLM-L6-v2 silently truncates at 256
word pieces, so nothing may be longer). The splitting is semantic-text-splitter's;
markdown is first cut into sections at its headings (parsed by markdown-it) so
every chunk carries its heading path. A chunk whose text repeats an earlier
chunk of the same file is dropped: it adds nothing to search, and a file of one
line repeated a million times would otherwise store thousands of identical
vectors, which degrade the vector index for every other file.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from kbrelease.chunking.formats.base import Section
from kbrelease.errors import InputFileError


@dataclass(frozen=True)
class Chunk:
    """A piece of one file, ready to embed."""

    text: str
    index: int
    start: int
    """Character offset of the chunk in the decoded file (in the extracted text for PDF, HTML and DOCX)."""
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    """1-based page of a PDF chunk (None for formats without pages)."""

    @property
    def heading(self) -> str:
        return " > ".join(self.heading_path)


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str
    warnings: tuple[str, ...] = field(default=())


def decode_text(data: bytes, fallback_encoding: str = "latin-1", what: str = "a text file") -> Decoded:
    """Decode a text file's bytes, refusing binary and empty content; ``what`` names the kind of file in messages."""
    if data.startswith(codecs.BOM_UTF8) and b"\x00" not in data:
        try:
            return Decoded(data[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputFileError(f"starts with a UTF-8 BOM but is not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from exc
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise InputFileError(f"starts with a UTF-16 BOM but is not valid UTF-16 ({exc.reason}); re-save it as UTF-8") from exc
        if "\x00" in text:
            raise InputFileError(f"binary content (NUL characters) in {what}; remove it from the source or add it to 'exclude'")
        return Decoded(text, "utf-16")
    if b"\x00" in data:
        raise InputFileError(f"binary content (NUL bytes) in {what}; remove it from the source or add it to 'exclude'")
    try:
        return Decoded(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError as exc:
        try:
            text = data.decode(fallback_encoding)
        except (UnicodeDecodeError, LookupError) as exc2:
            raise InputFileError(
                f"not UTF-8 ({exc.reason} at byte {exc.start}) and not {fallback_encoding}; re-save it as UTF-8 or set text.fallback_encoding"
            ) from exc2
        return Decoded(
            text,
            fallback_encoding,
            (f"not valid UTF-8 (byte {exc.start}); decoded as {fallback_encoding} (text.fallback_encoding)",),
        )


def markdown_sections(text: str) -> list[tuple[tuple[str, ...], int, int]]:
    """(heading path, start char, end char) of each section body of a markdown text."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(text)
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))

    def offset(line_no: int) -> int:
        return line_starts[min(line_no, len(line_starts) - 1)]

    headings: list[tuple[int, str, int, int]] = []  # level, title, first line, line after
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.map is not None:
            title = tokens[i + 1].content.strip() if i + 1 < len(tokens) else ""
            headings.append((int(tok.tag[1:]), title, tok.map[0], tok.map[1]))
    sections: list[tuple[tuple[str, ...], int, int]] = []
    path: list[tuple[int, str]] = []
    body_start = 0
    for level, title, first, after in headings:
        sections.append((tuple(t for _, t in path), body_start, offset(first)))
        path = [(lv, t) for lv, t in path if lv < level] + [(level, title)]
        body_start = offset(after)
    sections.append((tuple(t for _, t in path), body_start, len(text)))
    return [s for s in sections if text[s[1] : s[2]].strip()]


def _unique(chunks: Iterable[Chunk]) -> list[Chunk]:
    """The chunks in order without repeats of an earlier chunk's text, numbered again from 0."""
    seen: set[str] = set()
    out: list[Chunk] = []
    for chunk in chunks:
        if chunk.text in seen:
            continue
        seen.add(chunk.text)
        out.append(replace(chunk, index=len(out)))
    return out


class TextChunker:
    """Splits decoded text into chunks of at most ``max_tokens`` model tokens."""

    def __init__(
        self,
        max_tokens: int,
        target_tokens: int,
        hf_tokenizer: Any | None = None,
        count_tokens: Callable[[str], int] | None = None,
        overlap_tokens: int = 0,
    ) -> None:
        """``overlap_tokens``: up to this many tokens of a chunk's end repeated at the next one's start (kept below ``target_tokens``)."""
        from semantic_text_splitter import MarkdownSplitter, TextSplitter

        target = max(1, min(target_tokens, max_tokens))
        capacity = (target, max_tokens)
        overlap = max(0, min(overlap_tokens, target - 1))
        self.max_tokens = max_tokens
        if hf_tokenizer is not None:
            hf_tokenizer.no_truncation()
            hf_tokenizer.no_padding()
            self._text = TextSplitter.from_huggingface_tokenizer(hf_tokenizer, capacity, overlap=overlap)
            self._md = MarkdownSplitter.from_huggingface_tokenizer(hf_tokenizer, capacity, overlap=overlap)
        elif count_tokens is not None:
            self._text = TextSplitter.from_callback(count_tokens, capacity, overlap=overlap)
            self._md = MarkdownSplitter.from_callback(count_tokens, capacity, overlap=overlap)
        else:
            raise ValueError("TextChunker needs hf_tokenizer or count_tokens")

    def chunk(self, text: str, markdown: bool) -> list[Chunk]:
        """Chunks of a whole text: markdown is cut at its headings first, plain text is not."""
        if not markdown:
            return self.chunk_sections([Section(text)], markdown=False)
        return self.chunk_sections([Section(text[start:end], path, start) for path, start, end in markdown_sections(text)], markdown=True)

    def chunk_sections(self, sections: Iterable[Section], markdown: bool) -> list[Chunk]:
        """Chunks of a document's sections (see :mod:`kbrelease.chunking.formats`), each cut on its own; repeats dropped.

        ``markdown`` picks the splitter that knows markdown's blocks (lists,
        code fences); every other format's text is cut at paragraphs and sentences.
        """
        splitter = self._md if markdown else self._text
        chunks: list[Chunk] = []
        for section in sections:
            for off, piece in splitter.chunk_indices(section.text):
                if piece.strip():
                    chunks.append(Chunk(piece.strip(), len(chunks), section.start + off, section.heading_path, section.page))
        return _unique(chunks)
