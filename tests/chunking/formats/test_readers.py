"""Each format's reader on real files: the text it keeps, heading paths, pages, and what it refuses."""

from __future__ import annotations

import io
import zipfile

import pytest

from kbrelease.chunking.formats import FORMATS, SUFFIXES, Extracted, ReadOptions, format_for, read_document
from kbrelease.chunking.formats.word import MAX_ENTRIES
from kbrelease.config import TEXT_SUFFIXES
from kbrelease.errors import InputFileError

from .conftest import DATA

OPTIONS = ReadOptions()


def read(name: str, data: bytes | None = None, options: ReadOptions = OPTIONS) -> Extracted:
    return read_document(name, (DATA / name).read_bytes() if data is None else data, options)


def by_heading(doc: Extracted) -> dict[tuple[str, ...], str]:
    return {s.heading_path: s.text for s in doc.sections}


# --- the registry -------------------------------------------------------------------


def test_every_suffix_has_one_format_and_text_sources_accept_them_all() -> None:
    assert len(SUFFIXES) == len(set(SUFFIXES))
    assert TEXT_SUFFIXES == SUFFIXES
    assert {".txt", ".md", ".pdf", ".html", ".htm", ".docx", ".rst", ".adoc"} <= set(SUFFIXES)
    assert format_for("a/B.PDF").name == "pdf"
    assert format_for("notes.HTM").name == "html"
    assert all(f.keeps for f in FORMATS)


# --- PDF ------------------------------------------------------------------------------


def test_pdf_text_per_page_with_its_number_and_the_outline_as_heading_path() -> None:
    doc = read("field-guide.pdf")

    pages = {s.page: s for s in doc.sections}
    assert set(pages) == {1, 2}
    assert pages[1].heading_path == ("Workshop Field Guide",)
    assert pages[2].heading_path == ("Workshop Field Guide", "Tool Calibration")
    assert "recalibrated every ninety days" in pages[2].text
    assert "certificates in the blue filing" in " ".join(pages[2].text.split())  # the ligatures ﬁ were normalized
    assert "recalibrated" not in pages[1].text
    assert pages[2].start > pages[1].start


def test_pdf_page_without_text_is_named_and_left_out() -> None:
    doc = read("field-guide.pdf")

    assert doc.notes == ("page 3 has no text layer (scanned images?) and was left out; OCR the PDF (e.g. ocrmypdf) to index it",)


def test_pdf_of_scanned_pages_only_is_empty_with_the_reason() -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.add_page(PdfReader(DATA / "field-guide.pdf").pages[2])
    out = io.BytesIO()
    writer.write(out)

    doc = read("scan.pdf", out.getvalue())

    assert doc.sections == []
    assert "page 1 has only images" in doc.empty_reason and "OCR" in doc.empty_reason


def _encrypted(user_password: str) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=DATA / "field-guide.pdf")
    writer.encrypt(user_password, owner_password="owner-secret", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_pdf_that_needs_a_password_is_refused_with_the_fix() -> None:
    with pytest.raises(InputFileError, match=r"encrypted and needs a password.*save a copy without a password"):
        read("locked.pdf", _encrypted("user-secret"))


def test_pdf_encrypted_without_a_user_password_is_read() -> None:
    doc = read("restricted.pdf", _encrypted(""))

    assert any("recalibrated every ninety days" in s.text for s in doc.sections)


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_truncated_pdf_is_refused_with_the_fix(cut: float) -> None:
    data = (DATA / "field-guide.pdf").read_bytes()

    with pytest.raises(InputFileError, match=r"not a readable PDF, damaged or truncated.*save or print it to a new PDF"):
        read("cut.pdf", data[: int(len(data) * cut)])


# --- HTML -----------------------------------------------------------------------------


def test_html_from_texinfo_keeps_the_section_and_drops_styles_and_comments() -> None:
    doc = read("libffi-closure-example.html")

    sections = by_heading(doc)
    body = sections[("2.6 Closure Example",)]
    assert "creates a new puts by binding fputs with stdout" in " ".join(body.split())
    assert "puts_binding" in body  # the example's code is content
    text = " ".join(s.text for s in doc.sections)
    assert "copiable-anchor" not in text  # <style>
    assert "Permission is hereby granted" not in text  # the licence comment
    assert doc.encoding == "utf-8"


def test_html_from_rustdoc_keeps_main_and_drops_sidebar_and_scripts() -> None:
    doc = read("rustdoc-is-x86-feature-detected.html")

    sections = by_heading(doc)
    assert ("Macro is_x86_feature_detected", "Supported arguments") in sections
    assert "does not support names separated with a comma" in " ".join(sections[("Macro is_x86_feature_detected", "Supported arguments")].split())
    text = " ".join(s.text for s in doc.sections)
    assert "59807616e" not in text  # the version in the <nav class="sidebar">
    assert "insertAdjacentHTML" not in text  # <script>
    assert "Skip to main content" not in text  # outside <main>


def test_html_chrome_is_dropped_but_an_articles_own_header_stays() -> None:
    page = b"""<html><body>
    <header><p>Site banner text</p></header>
    <div role="navigation">Menu entries</div>
    <article><header><h1>Release notes<a class="headerlink" href="#r">\xc2\xb6</a></h1></header>
    <p>Version two adds offline mode.</p>
    <aside>Related posts</aside>
    <h2>Upgrading</h2><p>Run the migration first.</p><table><tr><td>old</td><td>new</td></tr></table></article>
    <footer>Copyright footer</footer></body></html>"""

    doc = read("page.html", page)

    assert by_heading(doc) == {("Release notes",): "Version two adds offline mode.", ("Release notes", "Upgrading"): "Run the migration first.\n\nold new"}


def test_malformed_html_is_mended_like_a_browser_would() -> None:
    page = b"<html><body><h1>Runbook<h2>Restart</h1><p>Stop the <b>queue <p>then the workers</div></span><h2>Logs<p>Kept 30 days<li>rotated nightly <p"

    doc = read("broken.html", page)

    sections = by_heading(doc)
    assert "Stop the queue" in sections[("Runbook", "Restart")] and "then the workers" in sections[("Runbook", "Restart")]
    assert "Kept 30 days" in sections[("Runbook", "Logs")]


def test_html_declared_charset_is_honoured() -> None:
    page = '<html><head><meta charset="windows-1252"></head><body><p>Crème brûlée – served on Fridays</p></body></html>'.encode("cp1252")

    doc = read("menu.html", page)

    assert doc.sections[0].text == "Crème brûlée – served on Fridays"
    assert doc.encoding == "windows-1252"


def test_binary_file_named_html_is_refused() -> None:
    with pytest.raises(InputFileError, match=r"binary content \(NUL bytes\) in an HTML file"):
        read("logo.html", (DATA / "field-guide.pdf").read_bytes()[:2000] + b"\x00\x00")


def test_html_without_text_is_empty_with_the_reason() -> None:
    doc = read("app.html", b"<html><head><script>boot()</script></head><body><nav>Home</nav><div id='root'></div></body></html>")

    assert doc.sections == [] and "no text in the page's main content" in doc.empty_reason


# --- DOCX -----------------------------------------------------------------------------


def test_docx_headings_paragraphs_and_tables_in_order(docx_bytes: bytes) -> None:
    doc = read("handbook.docx", docx_bytes)

    sections = by_heading(doc)
    assert list(sections) == [
        ("Staff Handbook",),
        ("Staff Handbook", "Travel"),
        ("Staff Handbook", "Travel", "Expense Claims"),
        ("Staff Handbook", "Security"),  # a custom style based on Heading 1
    ]
    assert sections[("Staff Handbook", "Travel", "Expense Claims")] == (
        "Receipts for taxi rides after midnight are reimbursed at double the usual rate.\n\nItem | Limit\nHotel night | 180 EUR"
    )


def test_docx_zip_bomb_is_refused_before_it_is_unpacked(docx_bytes: bytes) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_bytes)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("word/media/padding.bin", b"\0" * (12 * 1024 * 1024))  # 12 MB of zeros pack to ~12 KB

    assert len(out.getvalue()) < 200_000
    with pytest.raises(InputFileError, match=r"unpacks to 1[23] MB, over the 10 MB limit .*zip bomb"):
        read("bomb.docx", out.getvalue(), ReadOptions(max_unpacked_bytes=10 * 1024 * 1024))


def test_docx_with_too_many_entries_is_refused(docx_bytes: bytes) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_bytes)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for i in range(MAX_ENTRIES):
            dst.writestr(f"bulk/entry{i}.xml", b"")

    with pytest.raises(InputFileError, match=f"holds {MAX_ENTRIES + len(zipfile.ZipFile(io.BytesIO(docx_bytes)).infolist())} zip entries"):
        read("many.docx", out.getvalue())


def test_docx_that_is_not_a_zip_is_refused_with_the_fix() -> None:
    with pytest.raises(InputFileError, match=r"not a zip archive.*saved as .docx without a password"):
        read("old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)  # an OLE2 file: a .doc, or a password-protected .docx


def test_docx_with_damaged_xml_is_refused(docx_bytes: bytes) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_bytes)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info)
            dst.writestr(info, body[: len(body) // 2] if info.filename == "word/document.xml" else body)

    with pytest.raises(InputFileError, match=r"not a readable DOCX.*save it again as .docx"):
        read("damaged.docx", out.getvalue())


# --- reStructuredText -----------------------------------------------------------------------


def test_rst_section_titles_are_the_heading_path() -> None:
    doc = read("requests-faq.rst")

    sections = by_heading(doc)
    assert sections[("Frequently Asked Questions",)] == "This part of the documentation answers common questions about Requests."
    assert "decompresses gzip-encoded responses" in sections[("Frequently Asked Questions", "Encoded Data?")]
    assert ("Frequently Asked Questions", 'What are "hostname doesn\'t match" errors?') in sections
    assert "documentation about headers" in sections[("Frequently Asked Questions", "Custom User-Agents?")]  # a Sphinx role keeps its text
    assert not any("_faq" in s.text for s in doc.sections)  # link targets are not text


def test_rst_never_reads_other_files_nor_passes_raw_markup(tmp_path: object) -> None:
    source = b"""Secrets
=======

.. include:: /etc/passwd

.. raw:: html

   <script>alert(1)</script>

.. csv-table::
   :file: /etc/hostname

.. autoclass:: requests.Session

Still indexed after all that.
"""
    doc = read("hostile.rst", source)

    text = " ".join(s.text for s in doc.sections)
    assert "root:" not in text and "alert(1)" not in text
    assert "Still indexed after all that." in text
    assert doc.sections[0].heading_path == ("Secrets",)


def test_rst_directives_docutils_does_not_know_keep_their_arguments_and_content() -> None:
    """Sphinx's code-block and a project's own directives (CMake's ``command``) hold what keyword queries ask for."""
    source = b"""add_library
===========

.. command:: add_library

  Add a library to the project using the specified source files.

  .. code-block:: cmake

    add_library(<name> [STATIC | SHARED | MODULE] <source>...)

.. autoclass:: requests.Session
   :members:
"""
    text = " ".join(s.text for s in read("add_library.rst", source).sections)

    assert "add_library(<name> [STATIC | SHARED | MODULE] <source>...)" in text
    assert "Add a library to the project" in text and "requests.Session" in text
    assert ".. code-block::" not in text and ".. command::" not in text and "Unknown directive" not in text


# --- AsciiDoc -------------------------------------------------------------------------------


def test_asciidoc_headings_by_the_documented_rule() -> None:
    doc = read("jetty-readme.adoc")

    sections = by_heading(doc)
    assert list(sections) == [("ECLIPSE JETTY",), ("ECLIPSE JETTY", "Quick Setup")]
    assert "Jakarta EE Servlet Container" in sections[("ECLIPSE JETTY",)]
    assert "java -jar $JETTY_HOME/start.jar --help" in sections[("ECLIPSE JETTY", "Quick Setup")]


def test_asciidoc_heading_lines_inside_literal_blocks_and_comments_are_text() -> None:
    source = b"""= Guide

Intro.

== Install ==

----
== not a heading: a listing
----

// == not a heading: a comment

....
= nor this
....

=== Linux
Use the package.
"""
    doc = read("guide.adoc", source)

    sections = by_heading(doc)
    assert list(sections) == [("Guide",), ("Guide", "Install"), ("Guide", "Install", "Linux")]
    assert "== not a heading: a listing" in sections[("Guide", "Install")]
    assert "= nor this" in sections[("Guide", "Install")]
    text = source.decode()
    assert all(text[s.start : s.start + len(s.text)] == s.text for s in doc.sections)  # offsets point into the file


# --- Markdown and plain text: as before --------------------------------------------------


@pytest.mark.parametrize("name", ["it/vpn-setup.md", "policies/gym-partnership.txt"])
def test_markdown_and_text_read_through_the_registry_chunk_as_before(name: str) -> None:
    from pathlib import Path

    from kbrelease.chunking.text import TextChunker, decode_text

    data = (Path(__file__).resolve().parents[3] / "examples" / "corpus" / "text" / name).read_bytes()
    chunker = TextChunker(max_tokens=64, target_tokens=24, count_tokens=lambda s: len(s.split()))

    doc = read(name, data)

    assert doc.markdown == name.endswith(".md")
    via_registry = chunker.chunk_sections(doc.sections, markdown=doc.markdown)
    assert via_registry == chunker.chunk(decode_text(data).text, markdown=doc.markdown)
    assert len(via_registry) > 1
    assert all(c.page is None for c in via_registry)


def test_rst_nested_beyond_docutils_recursion_is_refused_with_the_fix() -> None:
    deep = "".join("  " * i + "- item\n\n" for i in range(300)).encode()

    with pytest.raises(InputFileError, match="nested too deeply for docutils"):
        read("deep.rst", deep)


def test_html_nested_thousands_deep_is_read() -> None:
    doc = read("deep.html", b"<div>" * 5000 + b"<h2>Bottom</h2><p>deep text</p>" + b"</div>" * 5000)

    assert by_heading(doc) == {("Bottom",): "deep text"}


def test_pdf_page_is_cut_where_an_outline_entry_starts_mid_page() -> None:
    from pypdf import PdfWriter

    # The printed pages with one more outline entry: it starts on page 1, at the second paragraph (its text is the title).
    writer = PdfWriter(clone_from=DATA / "field-guide.pdf")
    writer.add_outline_item(title="Every member signs the tool register", page_number=0)
    out = io.BytesIO()
    writer.write(out)

    doc = read("guide.pdf", out.getvalue())

    page1 = [s for s in doc.sections if s.page == 1]
    assert [s.heading_path for s in page1] == [("Workshop Field Guide",), ("Every member signs the tool register",)]
    assert page1[0].text.rstrip().endswith("looked after.") and page1[1].text.startswith("Every member signs")
