"""Image files → normalized ``(3, size, size)`` arrays for the encoder.

Decode with Pillow, respect EXIF orientation, convert to RGB, resize the short
side to ``size`` and center-crop, scale to [0, 1] and normalize with the
model's mean/std.

Image bytes are untrusted (a corpus file, an upload). Before anything is
decoded, the header's width, height, pixel count and aspect ratio are checked
(:func:`check_dimensions`): a 141-byte PNG of 1×30000 pixels would otherwise
be scaled by its short side to 224×6,720,000. Only common raster formats are
opened (never EPS, which runs Ghostscript, or other rare plugins). Any error
from one file, whatever Pillow raises, becomes :class:`InputFileError` (or
:class:`ImageTooLarge`); the build records it and goes on.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from kbrelease.errors import ImageTooLarge, InputFileError

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
"""The formats opened (JPEG includes MPO); anything else is "not a readable image"."""


def check_dimensions(
    width: int,
    height: int,
    max_pixels: int,
    max_aspect_ratio: float,
    limit_name: str = "image.max_pixels",
    ratio_name: str = "image.max_aspect_ratio",
) -> None:
    """Refuse an image by its header alone: no side, too many pixels, or too thin."""
    if width < 1 or height < 1:
        raise InputFileError(f"image is {width}x{height} pixels; an image needs at least one pixel each way")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height:,} pixels, over {limit_name} "
            f"({max_pixels:,}); a likely decompression bomb — shrink it or raise {limit_name}"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect_ratio:
        raise ImageTooLarge(
            f"image is {width}x{height} pixels, an aspect ratio of {ratio:,.0f}:1, over {ratio_name} ({max_aspect_ratio:g}); crop it or raise {ratio_name}"
        )


def preprocess_image(
    data: bytes,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    max_pixels: int,
    limit_name: str = "image.max_pixels",
    max_aspect_ratio: float = 20.0,
    ratio_name: str = "image.max_aspect_ratio",
) -> npt.NDArray[np.float32]:
    """``limit_name``/``ratio_name`` are the settings named in the error when a limit is exceeded."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputFileError("empty image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _decode(data, size, max_pixels, max_aspect_ratio, limit_name, ratio_name)
            return _normalize(_to_rgb(img), size, mean, std)
    except InputFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"decompression bomb refused ({exc}); shrink the image or raise {limit_name}") from exc
    except UnidentifiedImageError as exc:
        raise InputFileError("not a readable image (unknown or corrupt format); replace or remove the file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise InputFileError(f"corrupt or truncated image ({_said(exc)}); replace or remove the file") from exc
    except MemoryError as exc:
        raise ImageTooLarge(f"not enough memory to decode this image; shrink it or lower {limit_name}") from exc
    except Exception as exc:  # any decoder failure is this file's failure, never the caller's
        raise InputFileError(f"cannot be decoded ({type(exc).__name__}: {_said(exc)}); replace or remove the file") from exc


def _said(exc: BaseException) -> str:
    return str(exc)[:200]


def _decode(data: bytes, size: int, max_pixels: int, max_aspect_ratio: float, limit_name: str, ratio_name: str) -> Any:
    from PIL import Image, ImageOps

    Image.init()  # registers every plugin, so FORMATS can name WEBP and TIFF (once per process)
    opened = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    check_dimensions(*opened.size, max_pixels, max_aspect_ratio, limit_name, ratio_name)
    opened.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
    opened.load()
    img: Image.Image = ImageOps.exif_transpose(opened)
    check_dimensions(*img.size, max_pixels, max_aspect_ratio, limit_name, ratio_name)  # as decoded, in case a plugin differs from its header
    return img


def _to_rgb(img: Any) -> Any:
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _normalize(img: Any, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]) -> npt.NDArray[np.float32]:
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    pixels = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    if pixels.shape != (size, size, 3):
        raise InputFileError(f"decoded to an array of shape {pixels.shape}, not ({size}, {size}, 3); replace or remove the file")
    normalized = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1), dtype=np.float32)
