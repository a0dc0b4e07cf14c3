"""Build the configured embedders (models load lazily, on first use)."""

from __future__ import annotations

from kbrelease.config import Config
from kbrelease.embedding.base import ImageEmbedder, TextEmbedder
from kbrelease.errors import ConfigError


def make_text_embedder(cfg: Config) -> TextEmbedder:
    t = cfg.text
    if t.embedder == "openai":
        from kbrelease.embedding.openai_http import OpenAITextEmbedder

        assert t.base_url and t.dim  # checked by Config
        return OpenAITextEmbedder(
            base_url=t.base_url,
            model=t.model,
            dim=t.dim,
            api_key=cfg.text_api_key.get_secret_value() if cfg.text_api_key else None,
            batch_size=t.batch_size,
            concurrency=t.concurrency,
            max_tokens=t.max_tokens,
        )
    if t.runtime == "onnx":
        embedder: TextEmbedder = make_onnx_text_embedder(cfg, t.quantize)
    else:
        from kbrelease.embedding.local_text import LocalTextEmbedder

        embedder = LocalTextEmbedder(
            model_path=t.model_path, model_name=t.model, device=t.device, batch_size=t.batch_size, quantize=t.quantize, forward_batch=t.forward_batch_size
        )
    if t.dim and embedder.identity.dim != t.dim:
        raise ConfigError(
            f"text model {t.model!r} gives {embedder.identity.dim}-d vectors but text.dim / TEXT_EMBEDDING_DIM is {t.dim}; fix the dimension or the model"
        )
    return embedder


def make_onnx_text_embedder(cfg: Config, quantize: str, threads: int | None = None) -> TextEmbedder:
    """The local text model on ONNX Runtime, exporting it first if this model revision has no export yet (needs torch once)."""
    from kbrelease.embedding.identity import configured_identity
    from kbrelease.embedding.local_text import CPU_FORWARD_BATCH, _resolve_model_folder
    from kbrelease.embedding.onnx_text import ONNX_QUANTIZE_MODES, OnnxTextEmbedder, export_onnx, onnx_file

    t = cfg.text
    if quantize not in ONNX_QUANTIZE_MODES:
        raise ConfigError(f"text.quantize {quantize} is not available with text.runtime onnx (use none or int8), or set text.runtime: torch")
    folder = _resolve_model_folder(t.model_path)
    identity = configured_identity(cfg, "text", runtime="onnx", quantize=quantize)
    path = export_onnx(folder, onnx_file(cfg.workspace / "models", identity.revision, quantize), quantize)
    return OnnxTextEmbedder(folder, path, identity, forward_batch=t.forward_batch_size or CPU_FORWARD_BATCH, threads=threads)


def make_query_text_embedder(cfg: Config, threads: int | None = None) -> TextEmbedder:
    """The text embedder for queries: ONNX Runtime when it gives the configured model's vectors, else the build's embedder.

    A float32 torch model and its float32 ONNX export agree to cosine 1.0000, so
    a query embedded by ONNX Runtime finds what the torch build stored, without
    importing torch (a one-off search starts in a fraction of the time). Reduced
    precision on torch (int8, bf16) and HTTP endpoints keep their own embedder.
    """
    t = cfg.text
    from kbrelease.embedding.onnx_text import onnxruntime_available

    if t.embedder == "local" and onnxruntime_available() and (t.runtime == "onnx" or t.quantize == "none") and t.device in (None, "cpu"):
        return make_onnx_text_embedder(cfg, t.quantize if t.runtime == "onnx" else "none", threads)
    return make_text_embedder(cfg)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_image_embedder(cfg: Config) -> ImageEmbedder:
    """The bundled EfficientNet-Lite0, or any encoder saved with torch.export at ``image.model_path``."""
    from pathlib import Path

    i = cfg.image
    embedder: ImageEmbedder
    if i.model.lower().replace("_", "-") == "efficientnet-lite0":
        from kbrelease.embedding.efficientnet_lite import NATIVE_SIZE, EfficientNetLiteEmbedder

        embedder = EfficientNetLiteEmbedder(
            input_size=i.input_size or NATIVE_SIZE,
            device=i.device,
            weights=Path(i.model_path) if i.model_path else None,
        )
    else:
        if not (i.model_path and i.dim and i.input_size):
            raise ConfigError(
                f"image model {i.model!r} is not bundled; set image.model_path to its torch.export file (.pt2) and image.dim and "
                "image.input_size (models are never downloaded at run time), or use image.model: efficientnet-lite0"
            )
        from kbrelease.embedding.exported_image import ExportedImageEmbedder

        embedder = ExportedImageEmbedder(i.model, Path(i.model_path), i.dim, i.input_size, i.mean or IMAGENET_MEAN, i.std or IMAGENET_STD, i.device)
    if i.dim and embedder.identity.dim != i.dim:
        raise ConfigError(f"image model {i.model!r} gives {embedder.identity.dim}-d vectors but image.dim / IMAGE_EMBEDDING_DIM is {i.dim}; fix the dimension")
    return embedder
