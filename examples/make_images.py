"""Generate the example image corpus in ``examples/corpus/images/``.

Every image is drawn procedurally from a fixed seed, so running this script
again rewrites byte-identical files (for a given Pillow and numpy version).
There are six visual categories with four images each, plus one JPEG that
carries an EXIF orientation tag (Orientation=6) so that viewers, and
kbrelease, have to rotate it before use.

Usage::

    python examples/make_images.py            # writes examples/corpus/images
    python examples/make_images.py --out DIR  # writes somewhere else

The drawing functions are also used by ``bench/make_corpus.py``; keep the
public names (``CATEGORIES``, ``draw_image``, ``save_image``) stable.
"""

from __future__ import annotations

import argparse
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

#: Fixed encoder settings: changing them changes the committed bytes.
JPEG_QUALITY = 82
MAX_BYTES = 40_000
MIN_SIDE = 256
MAX_SIDE = 480
#: Drawing happens at this multiple of the final size, then is downsampled,
#: which gives smooth (anti-aliased) edges to circles and triangles.
SUPERSAMPLE = 2
ORIENTATION_TAG = 0x0112

Rng = np.random.Generator
DrawFn = Callable[[Rng, int, int], Image.Image]


@dataclass(frozen=True)
class Category:
    """One visual category: its folder, file prefix, format and drawer."""

    name: str
    prefix: str
    ext: str
    draw: DrawFn


def make_rng(category: str, index: int, base_seed: int = 0) -> Rng:
    """Return a generator seeded from the category name and image index."""
    return np.random.default_rng([base_seed, zlib.crc32(category.encode()), index])


def random_size(rng: Rng) -> tuple[int, int]:
    """Pick a width and height between MIN_SIDE and MAX_SIDE, in steps of 16."""
    steps = (MAX_SIDE - MIN_SIDE) // 16 + 1
    width = MIN_SIDE + 16 * int(rng.integers(steps))
    height = MIN_SIDE + 16 * int(rng.integers(steps))
    return width, height


def _add_noise(img: Image.Image, rng: Rng, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0.0, sigma, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _jitter(rng: Rng, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)
    return r, g, b


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def draw_red_circles(rng: Rng, width: int, height: int) -> Image.Image:
    """One to three red discs on an off-white background."""
    s = SUPERSAMPLE
    img = Image.new("RGB", (width * s, height * s), _jitter(rng, (250, 250, 247), 5))
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    for _ in range(int(rng.integers(1, 4))):
        radius = rng.uniform(0.12, 0.3) * short
        cx = rng.uniform(radius, width - radius)
        cy = rng.uniform(radius, height - radius)
        colour = _jitter(rng, (215, 30, 35), 20)
        box = [
            (cx - radius) * s,
            (cy - radius) * s,
            (cx + radius) * s,
            (cy + radius) * s,
        ]
        draw.ellipse(box, fill=colour)
    img = img.resize((width, height), Image.Resampling.LANCZOS)
    return _add_noise(img, rng, 2.0)


def draw_stripes(rng: Rng, width: int, height: int) -> Image.Image:
    """Blue and white stripes at a random angle and period."""
    xs, ys = _grid(width, height)
    angle = rng.uniform(0.0, math.pi)
    period = rng.uniform(18.0, 48.0)
    phase = rng.uniform(0.0, period)
    t = (xs * math.cos(angle) + ys * math.sin(angle) + phase) / period
    # A soft edge (about one pixel) avoids harsh JPEG ringing.
    mask = np.clip((np.abs((t % 1.0) - 0.5) - 0.25) * period + 0.5, 0.0, 1.0)[..., None]
    blue = np.array(_jitter(rng, (25, 70, 180), 20), dtype=np.float32)
    white = np.array(_jitter(rng, (245, 246, 250), 6), dtype=np.float32)
    arr = mask * blue + (1.0 - mask) * white
    # No pixel noise here: these are stored as PNG, where noise costs a lot.
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def draw_checkerboard(rng: Rng, width: int, height: int) -> Image.Image:
    """A black and white checkerboard, slightly rotated, with varied cell size."""
    xs, ys = _grid(width, height)
    angle = rng.uniform(-0.35, 0.35)
    cell = rng.uniform(24.0, 56.0)
    ox, oy = rng.uniform(0.0, cell, 2)
    u = (xs * math.cos(angle) + ys * math.sin(angle) + ox) / cell
    v = (-xs * math.sin(angle) + ys * math.cos(angle) + oy) / cell
    on = (np.floor(u) + np.floor(v)) % 2 == 0
    dark = np.array(_jitter(rng, (20, 20, 22), 8), dtype=np.uint8)
    light = np.array(_jitter(rng, (240, 240, 236), 8), dtype=np.uint8)
    arr = np.where(on[..., None], dark, light)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def draw_landscape(rng: Rng, width: int, height: int) -> Image.Image:
    """A blue sky over rolling green hills, with a yellow sun."""
    xs, ys = _grid(width, height)
    horizon = rng.uniform(0.45, 0.65) * height
    amp = rng.uniform(0.04, 0.12) * height
    freq = rng.uniform(1.0, 3.0) * 2 * math.pi / width
    phase = rng.uniform(0.0, 2 * math.pi)
    ground_line = horizon + amp * np.sin(xs * freq + phase)
    sky_top = np.array(_jitter(rng, (70, 130, 215), 15), dtype=np.float32)
    sky_low = np.array(_jitter(rng, (190, 220, 245), 10), dtype=np.float32)
    grass_top = np.array(_jitter(rng, (95, 175, 70), 15), dtype=np.float32)
    grass_low = np.array(_jitter(rng, (30, 95, 35), 10), dtype=np.float32)
    ts = np.clip(ys / horizon, 0.0, 1.0)[..., None]
    sky = (1 - ts) * sky_top + ts * sky_low
    tg = np.clip((ys - ground_line) / (height - horizon + amp), 0.0, 1.0)[..., None]
    grass = (1 - tg) * grass_top + tg * grass_low
    arr = np.where((ys < ground_line)[..., None], sky, grass)
    # The sun sits in the sky, above the lowest point of the hills.
    radius = rng.uniform(0.06, 0.11) * min(width, height)
    sx = rng.uniform(radius * 1.5, width - radius * 1.5)
    sy = rng.uniform(radius * 1.5, max(radius * 1.6, horizon - amp - radius * 1.5))
    dist = np.hypot(xs - sx, ys - sy)
    sun = np.clip(radius + 0.5 - dist, 0.0, 1.0)[..., None] * (ys < ground_line)[..., None]
    sun_rgb = np.array(_jitter(rng, (255, 215, 60), 10), dtype=np.float32)
    arr = sun * sun_rgb + (1 - sun) * arr
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    return _add_noise(img, rng, 2.5)


def draw_starry_night(rng: Rng, width: int, height: int) -> Image.Image:
    """White and pale yellow dots on a dark navy gradient."""
    xs, ys = _grid(width, height)
    top = np.array(_jitter(rng, (5, 8, 30), 4), dtype=np.float32)
    low = np.array(_jitter(rng, (20, 30, 70), 8), dtype=np.float32)
    t = (ys / height)[..., None]
    arr = (1 - t) * top + t * low
    count = int(rng.integers(60, 160))
    for _ in range(count):
        x = rng.uniform(0, width)
        y = rng.uniform(0, height)
        r = rng.choice([0.8, 1.0, 1.3, 1.8, 2.5], p=[0.35, 0.3, 0.2, 0.1, 0.05])
        colour = np.array(_jitter(rng, (250, 245, 215), 10), dtype=np.float32)
        x0, x1 = max(int(x - 4), 0), min(int(x + 5), width)
        y0, y1 = max(int(y - 4), 0), min(int(y + 5), height)
        dist = np.hypot(xs[y0:y1, x0:x1] - x, ys[y0:y1, x0:x1] - y)
        alpha = np.clip(r + 0.5 - dist, 0.0, 1.0)[..., None]
        arr[y0:y1, x0:x1] = alpha * colour + (1 - alpha) * arr[y0:y1, x0:x1]
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    return _add_noise(img, rng, 1.5)


def draw_orange_triangles(rng: Rng, width: int, height: int) -> Image.Image:
    """One to four rotated orange triangles on a cream background."""
    s = SUPERSAMPLE
    img = Image.new("RGB", (width * s, height * s), _jitter(rng, (250, 244, 228), 5))
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    for _ in range(int(rng.integers(1, 5))):
        size = rng.uniform(0.15, 0.35) * short
        cx = rng.uniform(size, width - size)
        cy = rng.uniform(size, height - size)
        rot = rng.uniform(0.0, 2 * math.pi)
        points = [
            (
                (cx + size * math.cos(rot + k * 2 * math.pi / 3)) * s,
                (cy + size * math.sin(rot + k * 2 * math.pi / 3)) * s,
            )
            for k in range(3)
        ]
        draw.polygon(points, fill=_jitter(rng, (245, 130, 20), 15))
    return img.resize((width, height), Image.Resampling.LANCZOS)


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category("red-circles", "circles", "jpg", draw_red_circles),
        Category("stripes", "stripes", "png", draw_stripes),
        Category("checkerboard", "checker", "png", draw_checkerboard),
        Category("landscape", "landscape", "jpg", draw_landscape),
        Category("starry-night", "stars", "jpg", draw_starry_night),
        Category("orange-triangles", "triangles", "png", draw_orange_triangles),
    )
}


def draw_image(
    category: str,
    index: int,
    base_seed: int = 0,
    size: tuple[int, int] | None = None,
) -> Image.Image:
    """Draw image ``index`` of ``category``; same arguments, same pixels."""
    rng = make_rng(category, index, base_seed)
    width, height = size if size is not None else random_size(rng)
    return CATEGORIES[category].draw(rng, width, height)


def save_image(img: Image.Image, path: Path, exif: Image.Exif | None = None) -> int:
    """Save with fixed encoder settings chosen by the suffix; return the size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    extra = {"exif": exif.tobytes()} if exif is not None else {}
    if suffix in (".jpg", ".jpeg"):
        img.save(path, "JPEG", quality=JPEG_QUALITY, optimize=True, subsampling=2, **extra)
    elif suffix == ".png":
        img.save(path, "PNG", optimize=True, **extra)
    else:
        raise ValueError(f"unsupported image suffix {suffix!r} for {path}")
    return path.stat().st_size


def make_rotated_checker(path: Path) -> Path:
    """Write the EXIF Orientation=6 example.

    The upright picture is a 320x240 (landscape) checkerboard with a red
    square in its top-left corner. The pixels are stored rotated 90 degrees
    counter-clockwise (240x320), and Orientation=6 tells a viewer to rotate
    them 90 degrees clockwise for display, which restores the upright picture.
    """
    upright = draw_image("checkerboard", 99, size=(320, 240))
    ImageDraw.Draw(upright).rectangle([0, 0, 47, 47], fill=(220, 20, 30))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    save_image(stored, path, exif=exif)
    with Image.open(path) as check:
        shown = ImageOps.exif_transpose(check)
        if shown.size != upright.size:
            raise RuntimeError(f"{path}: EXIF rotation did not restore the upright size")
    return path


def generate(out_dir: Path, per_category: int = 4) -> list[Path]:
    """Write ``per_category`` images for every category, plus the rotated one."""
    written: list[Path] = []
    for category in CATEGORIES.values():
        for index in range(1, per_category + 1):
            path = out_dir / category.name / f"{category.prefix}-{index:02d}.{category.ext}"
            size = save_image(draw_image(category.name, index), path)
            if size > MAX_BYTES:
                raise RuntimeError(f"{path} is {size} bytes, over the {MAX_BYTES} limit")
            written.append(path)
    written.append(make_rotated_checker(out_dir / "checkerboard" / "checker-rotated.jpg"))
    return written


def main(argv: list[str] | None = None) -> int:
    default_out = Path(__file__).resolve().parent / "corpus" / "images"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out, help="output folder")
    parser.add_argument("--per-category", type=int, default=4, help="images per category")
    args = parser.parse_args(argv)
    written = generate(args.out, args.per_category)
    total = sum(p.stat().st_size for p in written)
    print(f"wrote {len(written)} images ({total} bytes) under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
