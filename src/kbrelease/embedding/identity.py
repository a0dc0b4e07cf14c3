"""The identity of the configured embedders, without loading a model.

Importing a package or running ``kbrelease check`` compares embedder
identities; loading MiniLM for that would cost ~10 s and most of the memory of
an import. The identity is derived from the same files the embedders hash when
they load (``tests/embedding/test_identity.py`` checks the two agree); where a
model folder is not plain enough to read (a Dense layer changes the dimension,
say), the model is loaded after all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kbrelease.config import Config
from kbrelease.embedding.base import EmbedderIdentity
from kbrelease.errors import ConfigError

_PLAIN_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling", "sentence_transformers.models.Normalize"}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _local_text_identity(cfg: Config, runtime: str, quantize: str) -> EmbedderIdentity | None:
    from kbrelease.embedding.local_text import _resolve_model_folder, folder_revision, text_preprocessing

    folder = _resolve_model_folder(cfg.text.model_path)
    modules = _json(folder / "modules.json")
    st_config = _json(folder / "sentence_bert_config.json")
    if not isinstance(modules, list) or not isinstance(st_config, dict):
        return None
    if {m.get("type") for m in modules if isinstance(m, dict)} - _PLAIN_MODULES:
        return None
    pooling = next((m for m in modules if isinstance(m, dict) and m.get("type", "").endswith("Pooling")), None)
    pool_cfg = _json(folder / pooling["path"] / "config.json") if pooling and pooling.get("path") else None
    dim = pool_cfg.get("word_embedding_dimension") if isinstance(pool_cfg, dict) else None
    max_seq = st_config.get("max_seq_length")
    if not isinstance(dim, int) or not isinstance(max_seq, int):
        return None
    return EmbedderIdentity(
        kind="text", model=cfg.text.model, dim=dim, revision=folder_revision(folder), preprocessing=text_preprocessing(max_seq, quantize, runtime)
    )


def _sha12(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def configured_identity(cfg: Config, kind: str, runtime: str | None = None, quantize: str | None = None) -> EmbedderIdentity:
    """The identity the configured ``kind`` ("text" or "image") embedder will have.

    ``runtime`` and ``quantize`` override the text model's configured ones (the query embedder's identity).
    """
    from kbrelease.embedding.factory import check_local_text_model, image_model_kind

    if kind == "text":
        check_local_text_model(cfg)
        if cfg.text.embedder == "openai":
            assert cfg.text.dim is not None  # checked by Config
            return EmbedderIdentity(kind="text", model=cfg.text.model, dim=cfg.text.dim)
        runtime = runtime or cfg.text.runtime
        from kbrelease.embedding.local_text import effective_quantize

        quantize = quantize or effective_quantize(cfg.text.quantize, runtime, cfg.text.device)
        if runtime == "onnx" and quantize == "bf16":
            raise ConfigError("text.quantize bf16 is not available with text.runtime onnx (use none or int8), or set text.runtime: torch")
        found = _local_text_identity(cfg, runtime, quantize)
        if found is not None:
            if cfg.text.dim and found.dim != cfg.text.dim:
                raise ConfigError(
                    f"text model {cfg.text.model!r} gives {found.dim}-d vectors but text.dim / TEXT_EMBEDDING_DIM is {cfg.text.dim}; "
                    "fix the dimension or the model"
                )
            return found
        if runtime == "onnx":
            raise ConfigError(
                f"text.runtime onnx: the model folder of {cfg.text.model!r} is not plain Transformer + Pooling (+ Normalize); set text.runtime: torch"
            )
        from kbrelease.embedding.factory import make_text_embedder

        return make_text_embedder(cfg).identity
    if kind != "image":
        raise ConfigError(f"unknown modality {kind!r}; expected 'text' or 'image'")
    i = cfg.image
    if image_model_kind(cfg) == "efficientnet-lite0":
        from kbrelease.embedding.efficientnet_lite import FEATURE_DIM, MEAN, NATIVE_SIZE, STD, weights_path

        path = Path(i.model_path) if i.model_path else weights_path()
        if not path.is_file():
            raise ConfigError(f"image.model_path {path} does not exist; point it to the EfficientNet-Lite0 .pth file")
        if i.dim and i.dim != FEATURE_DIM:
            raise ConfigError(f"image model {i.model!r} gives {FEATURE_DIM}-d vectors but image.dim / IMAGE_EMBEDDING_DIM is {i.dim}; fix the dimension")
        mean, std = (",".join(map(str, v)) for v in (MEAN, STD))
        size = i.input_size or NATIVE_SIZE
        preprocessing = f"crop{size}-mean{mean}-std{std}"
        if i.runtime == "onnx":
            from kbrelease.embedding.onnx_image import ORT_TAG

            preprocessing += ORT_TAG
        return EmbedderIdentity(kind="image", model="efficientnet-lite0", dim=FEATURE_DIM, revision=_sha12(path), preprocessing=preprocessing)
    from kbrelease.embedding.factory import IMAGENET_MEAN, IMAGENET_STD

    assert i.model_path and i.dim and i.input_size  # checked by image_model_kind
    if i.runtime == "onnx":
        raise ConfigError(f"image.runtime onnx runs the bundled efficientnet-lite0 only, not {i.model!r}; set image.runtime: torch (KBRELEASE_IMAGE_RUNTIME)")
    path = Path(i.model_path)
    if not path.is_file():
        raise ConfigError(f"image.model_path {path} does not exist; point it to a file saved with torch.export.save")
    norm_mean, norm_std = i.mean or IMAGENET_MEAN, i.std or IMAGENET_STD
    return EmbedderIdentity(
        kind="image",
        model=i.model,
        dim=i.dim,
        revision=hashlib.sha256(path.read_bytes()).hexdigest()[:12],
        preprocessing=f"crop{i.input_size}-mean{','.join(map(str, norm_mean))}-std{','.join(map(str, norm_std))}",
    )
