"""The embedding cache and per-file content packages.

- :mod:`~kbrelease.cache.embeddings` — vectors kept by (model identity, sha256 of
  the chunk text or image), so a new release embeds only what changed.
- :mod:`~kbrelease.cache.file_packages` — per-file content packages (chunks and
  vectors of one file, seed 001's "processor outputs"): ``cache export|import``,
  checked, signed, and believed only on a trusted signature or a re-embedded sample.
"""
