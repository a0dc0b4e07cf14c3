"""Real documents for the format readers: files in data/ (see data/SOURCES.md) and DOCX files python-docx writes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def handbook_docx() -> bytes:
    """A DOCX written by python-docx (Word's own default template): a title, headings, a table, a custom heading style."""
    from docx import Document
    from docx.enum.style import WD_STYLE_TYPE

    doc = Document()
    doc.add_heading("Staff Handbook", level=0)
    doc.add_paragraph("Welcome to the company. This handbook explains how things work here.")
    doc.add_heading("Travel", level=1)
    doc.add_paragraph("Book trains through the travel desk at least a week ahead.")
    doc.add_heading("Expense Claims", level=2)
    doc.add_paragraph("Receipts for taxi rides after midnight are reimbursed at double the usual rate.")
    table = doc.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Item", "Limit"), ("Hotel night", "180 EUR")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    custom = doc.styles.add_style("Policy Heading", WD_STYLE_TYPE.PARAGRAPH)
    custom.base_style = doc.styles["Heading 1"]
    doc.add_paragraph("Security", style="Policy Heading")
    doc.add_paragraph("Badges are worn visibly on every floor.")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


@pytest.fixture(scope="session")
def docx_bytes() -> bytes:
    return handbook_docx()
