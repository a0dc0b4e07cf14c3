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
    from kbrelease.embedding.local_text import LocalTextEmbedder

    embedder = LocalTextEmbedder(
        model_path=t.model_path, model_name=t.model, device=t.device, batch_size=t.batch_size, quantize=t.quantize, forward_batch=t.forward_batch_size
    )
    if t.dim and embedder.identity.dim != t.dim:
        raise ConfigError(
            f"text model {t.model!r} gives {embedder.identity.dim}-d vectors but text.dim / TEXT_EMBEDDING_DIM is {t.dim}; fix the dimension or the model"
        )
    return embedder


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
