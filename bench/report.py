"""How every bench hands back its result: the JSON report on stdout and, with ``--json-out``, in a file.

Standard library only: ``llamaindex_bench.py`` imports it from LlamaIndex's own virtualenv.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(result: Any, json_out: Path | None) -> None:
    """Print ``result`` as indented JSON; also write it to ``json_out`` (parents created) when given."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
