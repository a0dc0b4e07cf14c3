"""Small JPEG thumbnails of release images, for search results."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from kbrelease.errors import ImageTooLarge, InputFileError


def make_thumbnail(path: Path, max_side: int, max_pixels: int, quality: int = 82) -> bytes:
    """A JPEG whose longest side is at most ``max_side``, EXIF orientation applied, alpha on white."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from kbrelease.trust.paths import is_regular_file

    if not is_regular_file(path):  # never a device, FIFO or folder: /dev/zero would be read forever
        raise InputFileError("not a regular file; no thumbnail is made for it", str(path.name))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise ImageTooLarge(f"{path.name} is {width}x{height} pixels, over the limit of {max_pixels:,}; no thumbnail is made for it")
                opened.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
                img = ImageOps.exif_transpose(opened)
                img.load()
    except InputFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{path.name}: decompression bomb refused ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(f"not a readable image ({exc}); replace or remove the file", str(path.name)) from exc
    if img.mode != "RGB":
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        img = background
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality, optimize=True, progressive=True)
    return out.getvalue()
