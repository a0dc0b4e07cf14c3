"""Document readers alone: how fast each file is turned into sections (no chunking, no model).

Every file is read with ``kbrelease.chunking.formats.read_document`` as the
build reads it (one thread), ``--repeat`` times after one warm-up read (which
pays the parser's import); the best time is reported, with pages/s for a PDF
and characters/s for every format.

Example (the PDFs of Debian's libtasn1-doc and shared-mime-info packages)::

    python bench/formats_bench.py /usr/share/doc/libtasn1-doc/libtasn1.pdf /usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import add_smoke, emit, loadavg  # bench/ is the script's folder, first on sys.path

from kbrelease.chunking.formats import ReadOptions, format_for, read_document

TEST_DATA = Path(__file__).resolve().parents[1] / "tests" / "chunking" / "formats" / "data"
SMOKE_FILES = sorted(p for p in TEST_DATA.iterdir() if p.suffix in (".pdf", ".html", ".rst", ".adoc"))


def bench_file(path: Path, repeat: int) -> dict[str, Any]:
    data = path.read_bytes()
    options = ReadOptions()
    read_document(path.name, data, options)  # warm-up: imports the parser
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        doc = read_document(path.name, data, options)
        times.append(time.perf_counter() - started)
    best = min(times)
    chars = sum(len(s.text) for s in doc.sections)
    pages = len({s.page for s in doc.sections if s.page is not None})
    return {
        "file": str(path),
        "format": format_for(path.name).name,
        "bytes": len(data),
        "sections": len(doc.sections),
        "pages_with_text": pages or None,
        "chars": chars,
        "best_seconds": round(best, 4),
        "pages_per_s": round(pages / best, 1) if pages else None,
        "chars_per_s": round(chars / best) if best else None,
        "notes": list(doc.notes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="documents to read (any format kbrelease reads)")
    parser.add_argument("--repeat", type=int, default=3, help="timed reads per file; the best is reported")
    parser.add_argument("--json-out", type=Path)
    add_smoke(parser)
    args = parser.parse_args()
    files = SMOKE_FILES if args.smoke else args.files
    if not files:
        parser.error("name the documents to read (or --smoke)")
    before = loadavg()
    results = [bench_file(f, 1 if args.smoke else args.repeat) for f in files]
    emit({"meta": {"repeat": 1 if args.smoke else args.repeat, "loadavg_before": before, "loadavg_after": loadavg()}, "results": results}, args.json_out)


if __name__ == "__main__":
    main()
