"""Image files → normalized ``(3, size, size)`` arrays for the encoder.

Decode with Pillow, respect EXIF orientation, convert to RGB, resize the short
side to ``size`` and center-crop, scale to [0, 1] and normalize with the
model's mean/std. Corrupt files and decompression bombs raise
:class:`InputFileError`; the build records them and goes on.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import numpy.typing as npt

from kbrelease.errors import ImageTooLarge, InputFileError


def preprocess_image(
    data: bytes,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    max_pixels: int,
    limit_name: str = "image.max_pixels",
) -> npt.NDArray[np.float32]:
    """``limit_name`` is the setting named in the error when ``max_pixels`` is exceeded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InputFileError("empty image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            width, height = opened.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"image is {width}x{height} = {width * height:,} pixels, over {limit_name} "
                    f"({max_pixels:,}); a likely decompression bomb — shrink it or raise {limit_name}"
                )
            opened.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
            opened.load()
            img: Image.Image = ImageOps.exif_transpose(opened)
    except InputFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"decompression bomb refused ({exc}); shrink the image or raise {limit_name}") from exc
    except UnidentifiedImageError as exc:
        raise InputFileError("not a readable image (unknown or corrupt format); replace or remove the file") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(f"corrupt or truncated image ({exc}); replace or remove the file") from exc
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            background = Image.new("RGB", img.size, (255, 255, 255))
            background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
            img = background
        else:
            img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    pixels = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    normalized = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1), dtype=np.float32)
