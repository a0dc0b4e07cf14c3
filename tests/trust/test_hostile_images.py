"""Hostile images and hostile search parameters: refused by name, fast, and never a failed release or a 500.

Width, height, pixel count and aspect ratio are read from the header and
checked before anything is decoded; whatever Pillow raises for one file is
that file's failure. Real images made with Pillow (or patched bytes of them),
a real release on Milvus Lite, the real FastAPI app.
"""

from __future__ import annotations

import io
import random
import resource
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kbrelease.errors import ImageTooLarge, InputFileError
from kbrelease.images.preprocess import preprocess_image

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
MAX_PIXELS = 40_000_000


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def thin_png(width: int, height: int, body: bool = True) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` (tiny when compressed); without ``body``, just its header and an empty IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    block = max(1, min(height, (1 << 20) // len(row)))  # rows per compress call: no list of millions of pieces
    pieces = [z.compress(row * min(block, height - at)) for at in range(0, height, block)] if body else []
    idat = b"".join(pieces) + z.flush() if body else b""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_with_header_size(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF header claims ``width`` x ``height``."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (10, 200, 30)), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_with_screen(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (4, 4)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def tiff_thin() -> bytes:
    return encode(Image.new("L", (1, 5000)), "TIFF")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n/Helvetica findfont 12 scalefont setfont\nshowpage\n%%EOF\n"

REFUSED: dict[str, tuple[bytes, str]] = {
    "1x30000 png": (thin_png(1, 30_000), "aspect ratio of 30,000:1, over image.max_aspect_ratio (20)"),
    "30000x1 png": (thin_png(30_000, 1), "aspect ratio of 30,000:1"),
    "1x25,000,000 png (header)": (thin_png(1, 25_000_000, body=False), "aspect ratio of 25,000,000:1"),
    "65000x65000 jpeg header": (jpeg_with_header_size(65_000, 65_000), "raise image.max_pixels"),
    "65535x65535 gif screen": (gif_with_screen(65_535, 65_535), "raise image.max_pixels"),
    "9000x5000 jpeg header": (jpeg_with_header_size(9_000, 5_000), "9000x5000 = 45,000,000 pixels, over image.max_pixels"),
    "huge bmp header": (bmp_with_size(2**31 - 1, 4), "pixels"),
    "1x5000 tiff": (tiff_thin(), "aspect ratio of 5,000:1"),
    "eps named .png": (EPS, "not a readable image"),
    "psd-like bytes": (b"8BPS\x00\x01" + b"\x00" * 40, "not a readable image"),
    "zero bytes": (b"", "empty image file"),
    "text": (b"hello, I am not an image\n" * 20, "not a readable image"),
    "truncated png": (encode(Image.new("RGB", (300, 300), (1, 2, 3)))[:120], "corrupt or truncated"),
    "png with a bad crc": (thin_png(64, 64)[:29] + b"\x00\x00\x00\x00" + thin_png(64, 64)[33:], "not a readable image"),
    "truncated jpeg": (encode(Image.new("RGB", (400, 400), (9, 9, 9)), "JPEG")[:400], "corrupt or truncated"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_hostile_images_are_refused_by_their_header_in_milliseconds(name: str) -> None:
    data, says = REFUSED[name]
    started = time.perf_counter()
    with pytest.raises(InputFileError) as caught:
        preprocess_image(data, 224, MEAN, STD, MAX_PIXELS)
    assert time.perf_counter() - started < 0.5, name
    assert says in caught.value.reason


def test_the_aspect_ratio_and_pixel_limits_are_settings() -> None:
    wide = encode(Image.new("RGB", (600, 20), (0, 0, 0)))
    with pytest.raises(ImageTooLarge, match=r"30:1, over service\.x \(20\); crop it or raise service\.x"):
        preprocess_image(wide, 32, MEAN, STD, MAX_PIXELS, max_aspect_ratio=20, ratio_name="service.x")
    assert preprocess_image(wide, 32, MEAN, STD, MAX_PIXELS, max_aspect_ratio=40).shape == (3, 32, 32)
    at_limit = encode(Image.new("RGB", (400, 20), (0, 0, 0)))  # exactly 20:1 is accepted
    assert preprocess_image(at_limit, 32, MEAN, STD, MAX_PIXELS).shape == (3, 32, 32)


def _animated_gif() -> bytes:
    frames = [Image.new("P", (40, 30), i) for i in range(4)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8
    return encode(Image.new("RGB", (300, 100), (5, 5, 5)), "JPEG", exif=exif)


ODD_BUT_FINE: dict[str, bytes] = {
    "cmyk jpeg": encode(Image.new("CMYK", (50, 40), (0, 255, 0, 0)), "JPEG"),
    "16-bit grey png": encode(Image.new("I;16", (50, 40), 65535)),
    "32-bit int tiff": encode(Image.new("I", (50, 40), 123456), "TIFF"),
    "float tiff": encode(Image.new("F", (50, 40), 0.5), "TIFF"),
    "1-bit png": encode(Image.new("1", (50, 40), 1)),
    "palette png with transparency": encode(Image.new("P", (50, 40), 0), transparency=0),
    "grey+alpha png": encode(Image.new("LA", (50, 40), (0, 0))),
    "animated gif": _animated_gif(),
    "exif-rotated jpeg": _rotated_jpeg(),
    "webp": encode(Image.new("RGB", (50, 40), (1, 2, 3)), "WEBP"),
}


@pytest.mark.parametrize("name", list(ODD_BUT_FINE))
def test_odd_but_valid_images_are_embedded(name: str) -> None:
    arr = preprocess_image(ODD_BUT_FINE[name], 32, MEAN, STD, MAX_PIXELS)
    assert arr.shape == (3, 32, 32) and arr.dtype == np.float32 and np.isfinite(arr).all()


def test_mutated_images_only_ever_fail_as_input_file_errors() -> None:
    """Random byte flips of valid files: any outcome but an exception other than InputFileError, and fast."""
    rng = random.Random(11)
    seeds = [encode(Image.new("RGB", (64, 48), (200, 10, 10))), encode(Image.new("RGB", (64, 48), (9, 90, 200)), "JPEG"), _animated_gif()]
    started = time.perf_counter()
    outcomes = {"ok": 0, "refused": 0}
    for i in range(240):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            preprocess_image(bytes(data), 32, MEAN, STD, MAX_PIXELS)
            outcomes["ok"] += 1
        except InputFileError:
            outcomes["refused"] += 1
    assert outcomes["ok"] and outcomes["refused"]
    assert time.perf_counter() - started < 30


# --- in a corpus: the release builds and names the bad images --------------------------


def test_a_release_builds_with_the_bad_images_reported_by_name(project: Any, corpus: Path) -> None:
    images = corpus / "images"
    (images / "thin.png").write_bytes(thin_png(1, 30_000))
    (images / "very-thin.png").write_bytes(thin_png(1, 25_000_000, body=False))
    (images / "eps.png").write_bytes(EPS)
    (images / "screen.jpg").write_bytes(jpeg_with_header_size(65_000, 65_000))
    (images / "cut.png").write_bytes(encode(Image.new("RGB", (300, 300), (1, 2, 3)))[:120])
    (images / "cmyk.jpg").write_bytes(ODD_BUT_FINE["cmyk jpeg"])
    (images / "grey16.png").write_bytes(ODD_BUT_FINE["16-bit grey png"])
    (corpus / "text" / "huge-line.txt").write_bytes(b"word " * 200_000)  # 1 MB on one line
    (corpus / "text" / "nul.md").write_bytes(b"# title\n\x00\x00\x00 binary after the heading")
    (corpus / "text" / "image.txt").write_bytes(thin_png(16, 16))
    (corpus / "text" / "cp1252.txt").write_bytes("Smart \u201cquotes\u201d and a \u20ac sign.".encode("cp1252"))
    (corpus / "text" / "utf16.md").write_bytes("# Caf\u00e9\n\nUTF-16 with a BOM.".encode("utf-16"))
    (corpus / "text" / "bom-broken.txt").write_bytes(b"\xef\xbb\xbf" + b"\xff\xfe broken")
    project.cfg.max_failed_share = 0.9

    started = time.monotonic()
    info = project.publish()

    assert time.monotonic() - started < 300
    assert info.live == "v1"
    pics, docs = info.release.sources["pictures"], info.release.sources["docs"]
    failures = {f["file"]: f["reason"] for f in pics.failures + docs.failures}
    assert "over image.max_aspect_ratio" in failures["thin.png"]
    assert "over image.max_aspect_ratio" in failures["very-thin.png"]
    assert "not a readable image" in failures["eps.png"]
    assert "raise image.max_pixels" in failures["screen.jpg"]
    assert "corrupt or truncated" in failures["cut.png"]
    assert "binary content" in failures["nul.md"]
    assert "binary content" in failures["image.txt"]
    assert "not valid UTF-8" in failures["bom-broken.txt"]
    assert (pics.failed, docs.failed) == (5, 3)
    assert pics.files - pics.failed == 6 + 2  # the corpus's 6 images, CMYK and 16-bit grey
    assert "huge-line.txt" not in failures and "cp1252.txt" not in failures and "utf16.md" not in failures
    assert project.search("Caf\u00e9 UTF-16 with a BOM", k=1)[0].file == "utf16.md"


# --- over HTTP: uploads and parameters ---------------------------------------------------


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, lite_server: str, text_embedder: Any, image_embedder: Any) -> Iterator[Any]:
    """Release v1 live over a few example texts and images, for the HTTP tests of this module."""
    import shutil

    from kbrelease import KbRelease, load_config

    from helpers import write_config

    folder = tmp_path_factory.mktemp("hostile-http")
    examples = Path(__file__).resolve().parents[2] / "examples" / "corpus"
    shutil.copytree(examples / "text" / "it", folder / "corpus" / "text" / "it")
    for kind in ("stripes", "checkerboard"):
        (folder / "corpus" / "images" / kind).mkdir(parents=True)
        for src in sorted((examples / "images" / kind).iterdir())[:2]:
            shutil.copy2(src, folder / "corpus" / "images" / kind / src.name)
    overrides = {"milvus.uri": lite_server, "milvus.db_prefix": "hostile_", "milvus.registry_db": "hostile_registry"}
    cfg = load_config(write_config(folder, folder / "corpus"), env={}, overrides=overrides)
    with KbRelease(cfg, text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.publish()
        yield kb


@pytest.fixture(scope="module")
def client(published: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from kbrelease.service.app import create_app

    with TestClient(create_app(published.cfg, kb=published)) as c:
        deadline = time.monotonic() + 120
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, c.get("/readyz").text
            time.sleep(0.05)
        yield c


def _upload(client: Any, data: bytes, **params: Any) -> Any:
    return client.post("/api/v1/search/image", params=params, files={"file": ("x.png", data, "image/png")})


def test_hostile_uploads_are_4xx_within_a_second_without_memory_growth(client: Any) -> None:
    very_thin = thin_png(1, 25_000_000)
    before = _max_rss_mb()
    for name, (data, says) in REFUSED.items():
        started = time.perf_counter()
        resp = _upload(client, data)
        took = time.perf_counter() - started
        assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.text)
        assert took < 2.0, (name, took)
        assert says.replace("image.max_pixels", "service.max_upload_pixels") in resp.json()["error"]["message"], name
    assert _upload(client, thin_png(1, 30_000)).status_code == 413
    assert _upload(client, very_thin).status_code == 413  # the real 1x25,000,000 file: the old 500 (OverflowError)
    assert _max_rss_mb() - before < 300  # the 1x30000 upload alone used to take 6.3 GB
    ok = _upload(client, ODD_BUT_FINE["cmyk jpeg"], k=2)
    assert ok.status_code == 200 and len(ok.json()["hits"]) == 2


def _q(**params: Any) -> str:
    from urllib.parse import urlencode

    return "/api/v1/search?" + urlencode(params)


THUMB = "/api/v1/thumbnails"
HOSTILE_URLS: list[tuple[str, int | None]] = [  # the URL, and its status when a 4xx is required (None: anything but a 5xx)
    (_q(q="vpn", release='v1" or key like "%'), 422),
    (_q(q="vpn", release="v" * 49), 400),  # passes the route's pattern, not the release grammar
    (_q(q="vpn", release="v" * 65), 422),
    (_q(q="vpn", release="../../etc"), 422),
    (_q(q="vpn", release="nope"), 404),
    (_q(q="vpn", source='docs" or 1==1'), 422),
    (_q(q="vpn", source="no_such_source"), 400),
    (_q(q="vpn", source="x" * 300), 422),
    (_q(q="vpn", k=-1), 422),
    (_q(q="vpn", k=10**30), 422),
    (_q(q="vpn", k="1e3"), 422),
    (_q(q="vpn", k=101), 422),
    (_q(q=""), 422),
    (_q(q="   "), 400),
    (_q(q="x" * 5000), 422),
    (_q(q="\x00\x01\x02"), None),
    ("/api/v1/search?q=%ED%A0%80", None),  # a lone surrogate as raw bytes: invalid UTF-8
    ("/api/v1/search?q=vpn&q=other&k=1&k=2", None),
    (f"{THUMB}/v1%22%20or%201/pictures/0123456789abcdef0123", 422),
    (f"{THUMB}/{'v' * 49}/pictures/0123456789abcdef0123", 400),
    (f"{THUMB}/v1/pictures/..%2F..%2Fetc%2Fpasswd", 404),
    (f"{THUMB}/v1/docs/0123456789abcdef0123", 404),
    (f"{THUMB}/v1/pictures/0123456789abcdef0123", 404),
    (f"{THUMB}/nope/pictures/0123456789abcdef0123", 404),
]


@pytest.mark.parametrize(("url", "status"), HOSTILE_URLS, ids=[str(i) for i in range(len(HOSTILE_URLS))])
def test_hostile_search_parameters_are_4xx_never_500(client: Any, url: str, status: int | None) -> None:
    resp = client.get(url)
    assert resp.status_code < 500, resp.text
    if status is not None:
        assert resp.status_code == status, resp.text
    if resp.status_code >= 400:
        assert resp.json()["error"]["message"] and len(resp.text) < 3000


def test_hostile_post_bodies_and_image_params(client: Any) -> None:
    for body in ({"q": "vpn", "release": 'v1" or 1==1'}, {"q": "vpn", "source": "../docs"}, {"q": "vpn", "k": 10**30}, {"q": 5}, {"q": ["a"]}):
        resp = client.post("/api/v1/search", json=body)
        assert 400 <= resp.status_code < 500, (body, resp.text)
    png = ODD_BUT_FINE["1-bit png"]
    for params in ({"release": 'v1" or 1==1'}, {"source": 'pictures" or 1==1'}, {"k": 0}, {"k": 10**30}, {"release": "v" * 60}):
        resp = _upload(client, png, **params)
        assert 400 <= resp.status_code < 500, (params, resp.text)
    resp = client.post("/api/v1/search/image", data={"q": "x" * 5000})
    assert 400 <= resp.status_code < 500


def test_a_huge_line_repeating_itself_is_not_thousands_of_identical_chunks() -> None:
    """Identical vectors by the thousand degraded the vector index until verification of the whole release failed."""
    from kbrelease.chunking.text import TextChunker

    chunker = TextChunker(max_tokens=256, target_tokens=200, count_tokens=lambda s: len(s.split()))
    chunks = chunker.chunk("word " * 200_000, markdown=False)
    assert 1 <= len(chunks) <= 3
    assert [c.index for c in chunks] == list(range(len(chunks)))
    md = chunker.chunk("# A\n\nsame text\n\n# B\n\nsame text\n\n# C\n\nother text\n", markdown=True)
    assert [(c.text, c.index, c.heading) for c in md] == [("same text", 0, "A"), ("other text", 1, "C")]


@pytest.mark.parametrize(
    "data",
    [
        b"plain text " * 1000 + b"\x00 late NUL after 8 KB",
        b"\xef\xbb\xbf# BOM then a NUL\x00",
        "UTF-16 text with a NUL \x00 inside".encode("utf-16"),
    ],
    ids=["late-nul", "utf8-bom-nul", "utf16-nul"],
)
def test_nul_anywhere_in_a_text_file_is_binary_content(data: bytes) -> None:
    """A NUL past the first 8 KB used to reach the chunker and the store."""
    from kbrelease.chunking.text import decode_text

    with pytest.raises(InputFileError, match="binary content"):
        decode_text(data)


def test_a_forged_data_index_is_refused_and_a_fifo_row_is_that_file_s_failure(project: Any, tmp_path: Path) -> None:
    """A forged data index (one from a package) that names ../../ or absolute paths is refused whole, never read;
    a row that names a FIFO in the mirror is that file's failure."""
    import hashlib
    import os

    from kbrelease.errors import DataIndexError
    from kbrelease.index.data_index import FileRecord, file_id_for, read_bundle, read_source_index, summarize_source, write_bundle, write_source_index

    project.sync()
    ws = Path(project.cfg.workspace)
    secret = tmp_path / "secret.txt"
    secret.write_text("the launch code is 0000", encoding="utf-8")
    mirror = ws / "mirror" / "docs"
    os.mkfifo(mirror / "pipe.txt")
    index = ws / "index" / "docs.parquet"
    rows = read_source_index(index)
    rel = os.path.relpath(secret, mirror)
    checksum = hashlib.sha256(secret.read_bytes()).hexdigest()
    stamp = rows[0].timestamp

    def forge(paths: list[str]) -> None:
        forged = [FileRecord(file_id_for("docs", p), p, stamp, 23, checksum) for p in paths]
        write_source_index(index, rows + forged)
        bundle = read_bundle(ws / "index")
        docs = next(s for s in bundle.data_manifest if s.channel == "docs")
        summary = summarize_source("docs", "text", docs.collection, docs.version, docs.storage_path, docs.index_file, rows + forged)
        write_bundle(ws / "index", [summary if s.channel == "docs" else s for s in bundle.data_manifest])

    forge([rel, str(secret)])
    with pytest.raises(DataIndexError, match="refusing the whole index") as refused:
        project.build()
    assert "'..' part" in str(refused.value) and "is absolute" in str(refused.value)

    forge(["pipe.txt"])
    project.cfg.max_failed_share = 0.9
    record = project.build("v2")

    failures = {f["file"]: f["reason"] for f in record.sources["docs"].failures}
    assert "not a regular file" in failures["pipe.txt"]
    project.verify("v2")
    assert not any("launch code" in h.text for h in project.search("launch code", k=5, release="v2"))
