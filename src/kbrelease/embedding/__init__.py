"""Embedders: texts and images become L2-normalized vectors, with an identity that says which model made them.

- :mod:`~kbrelease.embedding.base` — the protocols and :class:`EmbedderIdentity`;
- :mod:`~kbrelease.embedding.models` — the one holder of a configuration's embedders;
- :mod:`~kbrelease.embedding.factory` — which embedder the configuration asks for;
- :mod:`~kbrelease.embedding.local_text`, :mod:`~kbrelease.embedding.onnx_text` — the
  local text model on torch or ONNX Runtime; :mod:`~kbrelease.embedding.openai_http` —
  an OpenAI-compatible endpoint; :mod:`~kbrelease.embedding.efficientnet_lite`,
  :mod:`~kbrelease.embedding.exported_image` — image encoders;
- :mod:`~kbrelease.embedding.identity` — the identity of the configured models without loading them.
"""
