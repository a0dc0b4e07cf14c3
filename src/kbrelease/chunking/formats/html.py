"""HTML: the main content's text (BeautifulSoup on lxml's HTML parser), h1-h6 as heading path.

The main content is the ``<main>`` element, else the element with
``role="main"``, else the only ``<article>``, else the body. Dropped:
scripts, styles, templates, forms' controls, ``<nav>``, ``<aside>``, the
page's ``<header>`` and ``<footer>`` (those inside an article or section
belong to it and stay), and their ARIA twins (``role`` navigation, banner,
contentinfo, complementary, search). Permalink anchors inside headings (the
``¶`` or ``#`` that Sphinx, MkDocs and others add) are left out of the heading.

The parser (libxml2's, through lxml) mends malformed markup much as browsers
do: an unclosed ``<p>`` ends at the next block, stray end tags are ignored, a
truncated page keeps what came before the cut.
A file with NUL bytes is not a page and is refused; a page with no text in
its main content is skipped.
"""

from __future__ import annotations

import re
import threading
import warnings
from typing import Any

from kbrelease.chunking.formats.base import Extracted, ReadOptions, join_sections
from kbrelease.chunking.text import decode_text

_DROPPED_TAGS = ("script", "style", "noscript", "template", "nav", "aside", "iframe", "object", "embed", "svg", "canvas", "button", "select", "textarea")
_DROPPED_ROLES = ("navigation", "banner", "contentinfo", "complementary", "search")
_BLOCKS = frozenset(
    {
        *("address", "article", "blockquote", "br", "caption", "dd", "details", "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure"),
        *("footer", "form", "header", "hr", "li", "main", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul"),
    }
)
_CELLS = frozenset({"td", "th"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")
# bs4 warns (through the warnings module) about markup that looks like a file name or like XML; the warning
# filter is process-wide, so changing it is serialized. Parsing holds the GIL anyway: no throughput is lost.
_PARSE_LOCK = threading.Lock()


def read(data: bytes, options: ReadOptions, name: str) -> Extracted:
    decoded = decode_text(data, options.fallback_encoding, what="an HTML file (it is not a web page)")
    text, encoding = decoded.text, decoded.encoding
    if encoding not in ("utf-8", "utf-8-sig", "utf-16"):  # not UTF-8: the page's own <meta charset> knows better than the fallback
        text, encoding = _declared(data, text, encoding)
    soup = _parse(text)
    root = _main_content(soup)
    parts = _sections(root)
    sections = join_sections([(path, body, None) for path, body in parts])
    if not sections:
        return Extracted([], encoding=encoding, empty_reason="no text in the page's main content (only markup, scripts or navigation)")
    return Extracted(sections, encoding=encoding)


def _declared(data: bytes, text: str, encoding: str) -> tuple[str, str]:
    from bs4.dammit import EncodingDetector

    declared = EncodingDetector.find_declared_encoding(data[:8192], is_html=True)
    if declared:
        try:
            return data.decode(declared), declared
        except (LookupError, UnicodeDecodeError):
            pass
    return text, encoding


def _parse(text: str) -> Any:
    from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, XMLParsedAsHTMLWarning

    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        return BeautifulSoup(text, "lxml")


def _main_content(soup: Any) -> Any:
    """Drop what is not content, and pick the main content, in one pass over the tags (bs4's find_all costs a pass each)."""
    from bs4.element import Tag

    doomed: list[Any] = []
    mains: list[Any] = []
    role_mains: list[Any] = []
    articles: list[Any] = []
    for tag in soup.descendants:
        if not isinstance(tag, Tag):
            continue
        role = tag.get("role")
        page_chrome = tag.name in ("header", "footer") and tag.find_parent(("article", "section", "main")) is None
        if tag.name in _DROPPED_TAGS or role in _DROPPED_ROLES or page_chrome:
            doomed.append(tag)
        elif tag.name == "main":
            mains.append(tag)
        elif tag.name == "article":
            articles.append(tag)
        if role == "main":
            role_mains.append(tag)
    for tag in doomed:
        if not tag.decomposed:  # not inside an element removed before it
            tag.decompose()
    alive = [t for t in (*mains, *role_mains) if not t.decomposed]
    articles = [t for t in articles if not t.decomposed]
    return alive[0] if alive else articles[0] if len(articles) == 1 else soup.body or soup


def _heading_text(tag: Any) -> str:
    """A heading's own text: without permalink anchors (a link whose text is one symbol like ¶ or #) and nested headings."""
    pieces = []
    for string in tag.find_all(string=True):
        if string.find_parent(_HEADINGS) is not tag:
            continue
        link = string.find_parent("a")
        if link is not None and len(link.get_text(strip=True)) <= 1 and not link.get_text(strip=True).isalnum():
            continue
        pieces.append(str(string))
    return " ".join("".join(pieces).split())


def _sections(root: Any) -> list[tuple[tuple[str, ...], str]]:
    """(heading path, text) of the content under each heading, in document order, without recursion (pages nest deep)."""
    from bs4.element import Comment, Declaration, Doctype, NavigableString, ProcessingInstruction, Tag

    skipped_strings = (Comment, Declaration, Doctype, ProcessingInstruction)
    out: list[tuple[tuple[str, ...], str]] = []
    path: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush() -> None:
        text = "".join(buf)
        lines = [line.strip() for line in text.split("\n")]
        body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
        out.append((tuple(t for _, t in path), body))
        buf.clear()

    stack: list[tuple[Any, bool, bool]] = [(root, False, root.find_parent("pre") is not None)]  # (node, leaving, inside a <pre>)
    while stack:
        node, leaving, in_pre = stack.pop()
        if isinstance(node, NavigableString):
            if not isinstance(node, skipped_strings):
                buf.append(str(node) if in_pre else _SPACE.sub(" ", str(node).replace("\n", " ")))
            continue
        if not isinstance(node, Tag):
            continue
        if leaving:
            buf.append("\n\n" if node.name in _BLOCKS else " " if node.name in _CELLS else "")
            continue
        level = _HEADINGS.get(node.name)
        if level is not None:
            flush()
            path[:] = [(lv, t) for lv, t in path if lv < level] + [(level, _heading_text(node))]
            nested = node.find_all(_HEADINGS)  # a heading inside a heading, as broken pages have
            stack.extend((tag, False, in_pre) for tag in reversed(nested))
            continue
        if node.name in _BLOCKS:
            buf.append("\n\n")
        stack.append((node, True, in_pre))
        inner = in_pre or node.name == "pre"
        stack.extend((child, False, inner) for child in reversed(node.contents))
    flush()
    return out
