"""Text decoding and chunking: bytes of a text file become chunks the model reads whole.

:mod:`~kbrelease.chunking.text` decodes (UTF-8, UTF-16 with BOM, a declared
fallback), refuses binary content, and cuts paragraphs into chunks within the
model's token limit, keeping each chunk's heading path and offset.
"""
