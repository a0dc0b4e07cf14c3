"""Helpers shared by tests (importable; conftest modules are not)."""

from __future__ import annotations

from pathlib import Path


def write_config(folder: Path, corpus: Path, extra: str = "") -> Path:
    cfg = folder / "kbrelease.yaml"
    cfg.write_text(
        f"""workspace: {folder / "ws"}
sources:
  - name: docs
    path: {corpus / "text"}
    modality: text
  - name: pictures
    path: {corpus / "images"}
    modality: image
{extra}""",
        encoding="utf-8",
    )
    return cfg


def mini_corpus(dest: Path) -> Path:
    """Two text files and two images of the example corpus, copied into ``dest`` (a small package to export and forge)."""
    import shutil

    corpus = Path(__file__).resolve().parents[1] / "examples" / "corpus"
    pictures = [f"images/stripes/{p.name}" for p in sorted((corpus / "images" / "stripes").iterdir())[:2]]
    for rel in ["text/it/vpn-setup.md", "text/facilities/fire-drill.md", *pictures]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(corpus / rel, dest / rel)
    return dest


ENDPOINT = {"TEXT_EMBEDDING_BASE_URL": "http://127.0.0.1:9/v1", "TEXT_EMBEDDING_DIM": "384"}
"""Env of a text model served by an OpenAI-compatible endpoint (nothing listens: for checks that never embed)."""
OTHER_MODEL = {**ENDPOINT, "TEXT_EMBEDDING_MODEL": "bge-small-en"}
"""Another text model than the bundled one, configured the way it could really run (a name alone is refused)."""
