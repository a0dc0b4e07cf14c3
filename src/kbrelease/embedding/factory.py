"""Build the configured embedders (models load lazily, on first use)."""

from __future__ import annotations

from kbrelease.config import Config
from kbrelease.embedding.base import ImageEmbedder, TextEmbedder
from kbrelease.errors import ConfigError

BUNDLED_TEXT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_TEXT_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def check_local_text_model(cfg: Config) -> None:
    """Refuse a local text model name the configuration cannot deliver.

    Without ``text.base_url`` and ``text.model_path`` the local embedder loads
    the bundled all-MiniLM-L6-v2; a release built that way under another name
    would say, in its manifest, that another model made its vectors.
    """
    t = cfg.text
    if t.embedder != "local" or t.model_path or t.model.lower() in _BUNDLED_TEXT_ALIASES:
        return
    raise ConfigError(
        f"text model {t.model!r} (TEXT_EMBEDDING_MODEL) is not the bundled {BUNDLED_TEXT_MODEL} and no model is given to run it; "
        f"set TEXT_EMBEDDING_BASE_URL (and TEXT_EMBEDDING_DIM) to an OpenAI-compatible endpoint serving it, or text.model_path / "
        f"TEXT_EMBEDDING_MODEL_PATH to a local sentence-transformers folder of it, or unset TEXT_EMBEDDING_MODEL to use {BUNDLED_TEXT_MODEL}"
    )


def make_text_embedder(cfg: Config) -> TextEmbedder:
    t = cfg.text
    check_local_text_model(cfg)
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
    from kbrelease.embedding.local_text import effective_quantize

    quantize = effective_quantize(t.quantize, t.runtime, t.device)
    if t.runtime == "onnx":
        embedder: TextEmbedder = make_onnx_text_embedder(cfg, quantize)
    else:
        from kbrelease.embedding.local_text import LocalTextEmbedder

        embedder = LocalTextEmbedder(
            model_path=t.model_path, model_name=t.model, device=t.device, batch_size=t.batch_size, quantize=quantize, forward_batch=t.forward_batch_size
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
    check_local_text_model(cfg)
    if quantize not in ONNX_QUANTIZE_MODES:
        raise ConfigError(f"text.quantize {quantize} is not available with text.runtime onnx (use none or int8), or set text.runtime: torch")
    folder = _resolve_model_folder(t.model_path)
    identity = configured_identity(cfg, "text", runtime="onnx", quantize=quantize)
    path = export_onnx(folder, onnx_file(cfg.workspace / "models", identity.revision, quantize), quantize)
    return OnnxTextEmbedder(folder, path, identity, forward_batch=t.forward_batch_size or CPU_FORWARD_BATCH, threads=threads)


BF16_QUERY_PRECISIONS = ("none", "bf16")
"""``text.quantize`` values of a torch build whose queries ONNX Runtime float32 embeds (the same vectors, or within cosine 0.9999)."""


def make_query_text_embedder(cfg: Config, threads: int | None = None) -> TextEmbedder:
    """The text embedder for queries: ONNX Runtime when it gives the configured model's vectors, else the build's embedder.

    A float32 torch model and its float32 ONNX export agree to cosine 1.0000, so
    a query embedded by ONNX Runtime finds what the torch build stored, without
    importing torch (a one-off search starts in a fraction of the time). A bf16
    build's vectors are within cosine 0.9999 of float32 (top-5 neighbours 98.9 %
    the same on the CMake manual, docs/benchmarks.md), so its queries take the
    float32 export too. torch int8 (cosine down to 0.95) and HTTP endpoints keep
    their own embedder.
    """
    t = cfg.text
    from kbrelease.embedding.local_text import effective_quantize
    from kbrelease.embedding.onnx_text import onnxruntime_available

    quantize = effective_quantize(t.quantize, t.runtime, t.device)
    if t.embedder == "local" and onnxruntime_available() and (t.runtime == "onnx" or quantize in BF16_QUERY_PRECISIONS) and t.device in (None, "cpu"):
        return make_onnx_text_embedder(cfg, quantize if t.runtime == "onnx" else "none", threads)
    return make_text_embedder(cfg)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


SUPPORTED_IMAGE_MODELS: dict[str, str] = {
    "efficientnet-lite0": "bundled (1280-d, native input 224, any input size 32-1024; IMAGE_EMBEDDING_MODEL_PATH: its .pth weights, optional)",
    "<any name>": "an encoder saved with torch.export: IMAGE_EMBEDDING_MODEL_PATH=<file.pt2>, IMAGE_EMBEDDING_DIM and IMAGE_EMBEDDING_INPUT_SIZE",
}
"""The image encoders ``image.model`` / ``IMAGE_EMBEDDING_MODEL`` selects, and what each needs."""
_LITE0_ALIASES = {"efficientnet-lite0", "tf-efficientnet-lite0", "efficientnet-lite"}


def image_model_kind(cfg: Config) -> str:
    """``"efficientnet-lite0"`` or ``"exported"``; ConfigError listing the supported encoders for anything else."""
    i = cfg.image
    if i.model.lower().replace("_", "-") in _LITE0_ALIASES:
        return "efficientnet-lite0"
    missing = [
        env
        for env, value in (("IMAGE_EMBEDDING_MODEL_PATH", i.model_path), ("IMAGE_EMBEDDING_DIM", i.dim), ("IMAGE_EMBEDDING_INPUT_SIZE", i.input_size))
        if not value
    ]
    if missing:
        supported = "; ".join(f"{name}: {what}" for name, what in SUPPORTED_IMAGE_MODELS.items())
        raise ConfigError(
            f"image model {i.model!r} is not supported as configured: it is not bundled and {', '.join(missing)} "
            f"(image.model_path, image.dim, image.input_size) {'is' if len(missing) == 1 else 'are'} not set. Supported: {supported}. "
            "Models are never downloaded at run time; export yours once with torch.export, or use IMAGE_EMBEDDING_MODEL=efficientnet-lite0"
        )
    return "exported"


def make_image_embedder(cfg: Config) -> ImageEmbedder:
    """The bundled EfficientNet-Lite0, or any encoder saved with torch.export at ``image.model_path``."""
    from pathlib import Path

    i = cfg.image
    embedder: ImageEmbedder
    if i.runtime == "onnx":
        embedder = _onnx_image_embedder(cfg)
    elif image_model_kind(cfg) == "efficientnet-lite0":
        from kbrelease.embedding.efficientnet_lite import NATIVE_SIZE, EfficientNetLiteEmbedder

        embedder = EfficientNetLiteEmbedder(
            input_size=i.input_size or NATIVE_SIZE,
            device=i.device,
            weights=Path(i.model_path) if i.model_path else None,
        )
    else:
        from kbrelease.embedding.exported_image import ExportedImageEmbedder

        assert i.model_path and i.dim and i.input_size  # checked by image_model_kind
        embedder = ExportedImageEmbedder(i.model, Path(i.model_path), i.dim, i.input_size, i.mean or IMAGENET_MEAN, i.std or IMAGENET_STD, i.device)
    if i.dim and embedder.identity.dim != i.dim:
        raise ConfigError(f"image model {i.model!r} gives {embedder.identity.dim}-d vectors but image.dim / IMAGE_EMBEDDING_DIM is {i.dim}; fix the dimension")
    return embedder


def _onnx_image_embedder(cfg: Config) -> ImageEmbedder:
    """The bundled EfficientNet-Lite0 on ONNX Runtime, exporting it first if these weights at this size have no export yet (needs torch once)."""
    from pathlib import Path

    from kbrelease.embedding.efficientnet_lite import MEAN, NATIVE_SIZE, STD
    from kbrelease.embedding.identity import configured_identity
    from kbrelease.embedding.onnx_image import OnnxImageEmbedder, export_lite0_onnx, image_onnx_file
    from kbrelease.embedding.onnx_text import onnxruntime_available

    i = cfg.image
    if i.device not in (None, "cpu"):
        raise ConfigError(f"image.runtime onnx runs on the CPU; image.device is {i.device!r}: set image.runtime: torch to use it")
    if not onnxruntime_available():
        raise ConfigError("image.runtime onnx needs onnxruntime (a kbrelease dependency): pip install onnxruntime, or set image.runtime: torch")
    identity = configured_identity(cfg, "image")  # refuses any encoder but the bundled efficientnet-lite0 on this runtime
    size = i.input_size or NATIVE_SIZE
    path = export_lite0_onnx(Path(i.model_path) if i.model_path else None, size, image_onnx_file(cfg.workspace / "models", identity.revision, size))
    return OnnxImageEmbedder(path, identity, size, MEAN, STD)
