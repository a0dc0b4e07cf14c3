"""Decoding and chunking of text files, in the embedding model's tokens."""

from __future__ import annotations

import codecs
import itertools
from typing import Any

import pytest

from kbrelease.chunking.text import TextChunker, decode_text
from kbrelease.errors import InputFileError


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("Grüße, 世界".encode(), "utf-8"),
        (codecs.BOM_UTF8 + "Grüße, 世界".encode(), "utf-8-sig"),
        (codecs.BOM_UTF16_LE + "Grüße, 世界".encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + "Grüße, 世界".encode("utf-16-be"), "utf-16"),
    ],
)
def test_decodes_utf8_and_utf16_with_bom(data: bytes, encoding: str) -> None:
    decoded = decode_text(data)
    assert decoded.text == "Grüße, 世界"
    assert decoded.encoding == encoding
    assert decoded.warnings == ()


def test_other_encodings_fall_back_with_a_warning() -> None:
    decoded = decode_text("Crème brûlée".encode("cp1252"), fallback_encoding="cp1252")
    assert decoded.text == "Crème brûlée"
    assert "decoded as cp1252" in decoded.warnings[0]


def test_binary_content_is_refused() -> None:
    with pytest.raises(InputFileError, match="binary content"):
        decode_text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR")


@pytest.fixture(scope="module")
def chunker(text_embedder: Any) -> TextChunker:
    return TextChunker(text_embedder.max_tokens, 64, hf_tokenizer=text_embedder.hf_tokenizer)


def test_short_paragraphs_stay_whole(chunker: TextChunker) -> None:
    text = "The cat sat on the mat.\n\nThe dog slept by the door.\n\nBirds sang outside."
    chunks = chunker.chunk(text, markdown=False)
    assert all(c.text in text for c in chunks)
    joined = " ".join(c.text for c in chunks)
    for paragraph in text.split("\n\n"):
        assert paragraph in joined


def test_no_chunk_exceeds_the_model_limit_and_long_paragraphs_split_at_sentences(chunker: TextChunker, text_embedder: Any) -> None:
    sentence = "Every release of the knowledge base is built into a fresh database and verified before it goes live. "
    text = "Intro paragraph.\n\n" + sentence * 40 + "\n\nOutro paragraph."

    chunks = chunker.chunk(text, markdown=False)

    assert len(chunks) >= 3
    for chunk in chunks:
        assert text_embedder.count_tokens(chunk.text) <= text_embedder.max_tokens
        assert chunk.text == text[chunk.start : chunk.start + len(chunk.text)]
    middle = [c for c in chunks if sentence.strip() in c.text]
    assert all(c.text.endswith(".") for c in middle)  # cut at sentence ends
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_markdown_chunks_keep_their_heading_path(chunker: TextChunker) -> None:
    text = "# Guide\n\nIntro.\n\n## Install\n\nRun the installer.\n\n### Linux\n\nUse apt.\n\n## Use\n\nOpen the app.\n"

    chunks = chunker.chunk(text, markdown=True)

    by_text = {c.text: c.heading for c in chunks}
    assert by_text["Intro."] == "Guide"
    assert by_text["Run the installer."] == "Guide > Install"
    assert by_text["Use apt."] == "Guide > Install > Linux"
    assert by_text["Open the app."] == "Guide > Use"
    for c in chunks:
        assert text[c.start : c.start + len(c.text)] == c.text


def test_overlap_repeats_the_end_of_a_chunk_at_the_start_of_the_next(text_embedder: Any) -> None:
    sentences = [f"Step {i}: the release number {i} is verified before the switch moves the live pointer." for i in range(40)]
    text = " ".join(sentences)
    plain = TextChunker(text_embedder.max_tokens, 64, hf_tokenizer=text_embedder.hf_tokenizer).chunk(text, markdown=False)
    overlapping = TextChunker(text_embedder.max_tokens, 64, hf_tokenizer=text_embedder.hf_tokenizer, overlap_tokens=24).chunk(text, markdown=False)

    def shared(chunks: list[Any]) -> list[bool]:
        return [any(s in a.text and s in b.text for s in sentences) for a, b in itertools.pairwise(chunks)]

    assert len(plain) > 3 and not any(shared(plain))  # without overlap no sentence is in two chunks
    assert len(overlapping) > len(plain) and all(shared(overlapping))  # with it, each boundary sentence is repeated
    assert all(text_embedder.count_tokens(c.text) <= text_embedder.max_tokens for c in overlapping)


def test_an_overlap_at_or_past_the_target_is_kept_below_it(text_embedder: Any) -> None:
    text = " ".join(f"Sentence {i} says the release is verified before the switch." for i in range(30))
    chunker = TextChunker(text_embedder.max_tokens, 32, hf_tokenizer=text_embedder.hf_tokenizer, overlap_tokens=10_000)

    chunks = chunker.chunk(text, markdown=False)

    assert len(chunks) > 2 and all(text_embedder.count_tokens(c.text) <= text_embedder.max_tokens for c in chunks)
