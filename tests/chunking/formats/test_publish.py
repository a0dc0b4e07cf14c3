"""A corpus with one file of each format, and one bad file of each kind, published into Milvus Lite and searched."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import DATA, handbook_docx

pytestmark = pytest.mark.slow


def _corpus(folder: Path) -> Path:
    from pypdf import PdfWriter

    docs = folder / "docs"
    (docs / "manuals").mkdir(parents=True)
    shutil.copy2(DATA / "field-guide.pdf", docs / "manuals" / "field-guide.pdf")
    shutil.copy2(DATA / "libffi-closure-example.html", docs / "libffi.html")
    shutil.copy2(DATA / "requests-faq.rst", docs / "faq.rst")
    shutil.copy2(DATA / "jetty-readme.adoc", docs / "jetty.adoc")
    (docs / "handbook.docx").write_bytes(handbook_docx())
    (docs / "notes.md").write_text("# Notes\n\nThe coffee machine is descaled on Mondays.\n", encoding="utf-8")
    # the bad ones
    writer = PdfWriter(clone_from=DATA / "field-guide.pdf")
    writer.encrypt("user-secret", algorithm="AES-256")
    locked = io.BytesIO()
    writer.write(locked)
    (docs / "locked.pdf").write_bytes(locked.getvalue())
    pdf = (DATA / "field-guide.pdf").read_bytes()
    (docs / "truncated.pdf").write_bytes(pdf[: len(pdf) // 2])
    (docs / "logo.html").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    bomb = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(handbook_docx())) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("word/media/padding.bin", b"\0" * (12 * 1024 * 1024))
    (docs / "bomb.docx").write_bytes(bomb.getvalue())
    (docs / "broken.html").write_bytes(b"<html><body><h1>Runbook<h2>Restart</h1><p>Drain the <b>queue <p>then restart the workers</div><h2>Logs<p>Kept 30 days")
    return docs


def test_each_format_is_searchable_with_its_heading_and_page_and_bad_files_are_named(
    tmp_path: Path, isolated_milvus: dict[str, str], text_embedder: Any
) -> None:
    from kbrelease import KbRelease, load_config

    docs = _corpus(tmp_path)
    cfg_file = tmp_path / "kbrelease.yaml"
    cfg_file.write_text(
        f"workspace: {tmp_path / 'ws'}\nsources:\n  - name: docs\n    path: {docs}\n    modality: text\ntext:\n  max_file_mb: 1\nmax_failed_share: 0.5\n",
        encoding="utf-8",
    )
    cfg = load_config(cfg_file, env={}, overrides=isolated_milvus)
    with KbRelease(cfg, text_embedder=text_embedder) as kb:
        info = kb.publish()

        counts = info.release.sources["docs"]
        failures = {f["file"]: f["reason"] for f in counts.failures}
        assert set(failures) == {"locked.pdf", "truncated.pdf", "logo.html", "bomb.docx"}
        assert "encrypted and needs a password" in failures["locked.pdf"]
        assert "damaged or truncated" in failures["truncated.pdf"] and "save or print it to a new PDF" in failures["truncated.pdf"]
        assert "binary content (NUL bytes) in an HTML file" in failures["logo.html"]
        assert "over the 10 MB limit" in failures["bomb.docx"] and "zip bomb" in failures["bomb.docx"]
        scanned = "page 3 has no text layer (scanned images?) and was left out; OCR the PDF (e.g. ocrmypdf) to index it"
        assert counts.skips == [{"file": "manuals/field-guide.pdf", "reason": scanned}]
        assert (counts.files, counts.failed, counts.skipped) == (11, 4, 0)
        assert info.live == "v1"

        pdf = kb.search("how often are the torque wrenches recalibrated, and where are the certificates kept?", k=1)[0]
        assert (pdf.file, pdf.page, pdf.heading) == ("manuals/field-guide.pdf", 2, "Workshop Field Guide > Tool Calibration")

        html = kb.search("bind fputs to stdout to make a new puts with a closure", k=1)[0]
        assert (html.file, html.page, html.heading) == ("libffi.html", None, "2.6 Closure Example")

        docx = kb.search("reimbursement of taxi receipts after midnight", k=1)[0]
        assert (docx.file, docx.heading) == ("handbook.docx", "Staff Handbook > Travel > Expense Claims")

        rst = kb.search("does requests decompress gzip or brotli responses", k=1)[0]
        assert (rst.file, rst.heading) == ("faq.rst", "Frequently Asked Questions > Encoded Data?")

        adoc = kb.search("jetty base directory configuration and deploying war files", k=1)[0]
        assert (adoc.file, adoc.heading) == ("jetty.adoc", "ECLIPSE JETTY > Quick Setup")

        broken = kb.search("drain the queue then restart the workers", k=1)[0]
        assert (broken.file, broken.heading) == ("broken.html", "Runbook > Restart")

        manifest = (tmp_path / "ws" / "releases" / "v1" / "RELEASE_INFO.txt").read_text(encoding="utf-8")
        assert "failed  bomb.docx:" in manifest and "skipped manuals/field-guide.pdf: page 3 has no text layer" in manifest
