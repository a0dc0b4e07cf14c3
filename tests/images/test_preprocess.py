"""Image preprocessing: EXIF orientation, RGB, short-side resize + center crop, normalization."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from kbrelease.errors import InputFileError
from kbrelease.images.preprocess import preprocess_image

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_output_shape_and_normalization() -> None:
    arr = preprocess_image(_encode(Image.new("RGB", (640, 320), (255, 0, 0))), 224, MEAN, STD, 10**8)
    assert arr.shape == (3, 224, 224)
    assert arr.dtype == np.float32
    assert np.allclose(arr[0], 1.0) and np.allclose(arr[1], -1.0)


def test_center_crop_keeps_the_middle() -> None:
    img = Image.new("RGB", (300, 100), (0, 0, 255))
    img.paste((255, 255, 255), (100, 0, 200, 100))  # white middle third
    arr = preprocess_image(_encode(img), 64, MEAN, STD, 10**8)
    assert np.allclose(arr[:, :, 2:-2], 1.0, atol=0.05)  # only the white middle survives the crop
    assert arr[0].min() > 0.5  # red channel: no blue column left (edges may blur a little)


def test_exif_orientation_is_respected() -> None:
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 100, 100))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    data = _encode(img, "JPEG", exif=exif, quality=95)
    arr = preprocess_image(data, 100, MEAN, STD, 10**8)
    top, bottom = arr[:, :10, :].mean(), arr[:, -10:, :].mean()
    assert top > 0.5 > bottom  # after rotation, the white half is on top


def test_transparent_png_is_flattened_on_white() -> None:
    img = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    arr = preprocess_image(_encode(img), 32, MEAN, STD, 10**8)
    assert np.allclose(arr, 1.0)


def test_corrupt_and_oversized_images_are_refused() -> None:
    with pytest.raises(InputFileError, match="not a readable image"):
        preprocess_image(b"GIF89a-broken", 32, MEAN, STD, 10**8)
    with pytest.raises(InputFileError, match="corrupt or truncated"):
        preprocess_image(_encode(Image.new("RGB", (400, 400)), "JPEG")[:300], 32, MEAN, STD, 10**8)
    with pytest.raises(InputFileError, match="decompression bomb"):
        preprocess_image(_encode(Image.new("L", (3000, 3000))), 32, MEAN, STD, 1_000_000)
    with pytest.raises(InputFileError, match="empty"):
        preprocess_image(b"", 32, MEAN, STD, 10**8)
