"""Documents and text → chunks the model reads whole.

:mod:`~kbrelease.chunking.formats` reads each document format (plain text,
Markdown, PDF, HTML, DOCX, reStructuredText, AsciiDoc), chosen by the file's
suffix, into sections with their heading path (and page); and
:mod:`~kbrelease.chunking.text` decodes text (UTF-8, UTF-16 with BOM, a
declared fallback), refuses binary content, and cuts sections into chunks
within the model's token limit, keeping each chunk's heading path, page and offset.
"""
