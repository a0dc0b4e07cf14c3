"""reStructuredText: the text of the document (docutils), section titles as heading path.

The source is untrusted, so docutils runs with file insertion and ``raw``
disabled (no ``include``, no ``csv-table :file:``, no ``raw``), reports
nothing and never halts: a directive docutils does not know (Sphinx's
``code-block``, ``autoclass``, CMake's ``command``) keeps its arguments and
content as text, without the ``.. name::`` markup (a manual's code examples
and the names its custom directives document are what keyword queries ask
for); a role it does not know (``:ref:``) keeps its source text; disabled
directives (``include``, ``raw``, ``:file:``) leave nothing. The rest of the
file is indexed. ``start`` is the section's offset in the
text docutils extracted, not in the file.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from kbrelease.chunking.formats.base import Extracted, ReadOptions, join_sections
from kbrelease.chunking.text import decode_text
from kbrelease.errors import InputFileError

_SETTINGS = {
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "report_level": 5,  # none: problems are not printed ...
    "halt_level": 5,  # ... and never stop the parse
    "warning_stream": False,
    "doctitle_xform": False,  # the top title stays a section, so it heads the path like Markdown's "# Title"
    "_disable_config": True,  # no docutils.conf from the machine
    "input_encoding": "unicode",
}


def read(data: bytes, options: ReadOptions, name: str) -> Extracted:
    from docutils.core import publish_doctree

    decoded = decode_text(data, options.fallback_encoding)
    try:
        doctree = publish_doctree(decoded.text, settings_overrides=dict(_SETTINGS))
    except RecursionError as exc:  # docutils parses nested blocks recursively
        msg = "nested too deeply for docutils (lists or quotes hundreds of levels deep); flatten them or remove the file from the source"
        raise InputFileError(msg) from exc
    sections = join_sections([(path, text, None) for path, text in _sections(doctree)])
    if not sections:
        return Extracted([], encoding=decoded.encoding, empty_reason="no text after parsing (only directives or comments)")
    return Extracted(sections, encoding=decoded.encoding)


_DIRECTIVE_MARKUP = re.compile(r"^(\s*)\.\. [\w:.+-]+::[ \t]?", re.M)


def _unknown_directive_text(message: Any) -> str:
    """The arguments and content of a directive docutils does not know (its error message carries the source), else ""."""
    from docutils import nodes

    if not message.children or not message.children[0].astext().startswith("Unknown directive type"):
        return ""  # another problem, or a disabled directive (include, raw): its source is not document text
    blocks = [block.astext() for block in message.findall(nodes.literal_block)]
    return textwrap.dedent(_DIRECTIVE_MARKUP.sub(r"\1", "\n".join(blocks))).strip()


def _sections(doctree: Any) -> list[tuple[tuple[str, ...], str]]:
    """(heading path, text) of each section's own body, in document order, without recursion."""
    from docutils import nodes

    skipped = (nodes.comment, nodes.system_message, nodes.target, nodes.substitution_definition, nodes.raw, nodes.title)
    out: list[tuple[tuple[str, ...], str]] = []
    stack: list[tuple[Any, tuple[str, ...]]] = [(doctree, ())]
    while stack:
        node, path = stack.pop()
        body: list[str] = []
        subsections = []
        for child in node.children:
            if isinstance(child, nodes.section):
                title = child.next_node(nodes.title)
                subsections.append((child, (*path, " ".join(title.astext().split()) if title is not None else "")))
            elif isinstance(child, nodes.system_message):
                text = _unknown_directive_text(child)
                if text:
                    body.append(text)
            elif not isinstance(child, skipped):
                text = child.astext().strip()
                if text:
                    body.append(text)
        out.append((path, "\n\n".join(body)))
        stack.extend(reversed(subsections))
    return out
