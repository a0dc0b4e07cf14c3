"""The HTTP API in-process: every endpoint, and every kind of bad input answered with a 4xx JSON error."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kbrelease.release.schema import MANIFEST_SCHEMA_VERSION

from .conftest import ADMIN_TOKEN, EXAMPLES, make_client, wait_ready

STRIPES = EXAMPLES / "images" / "stripes" / "stripes-01.png"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def error_of(resp: Any, status: int) -> dict[str, Any]:
    """The JSON error body of ``resp``, checked to have the one shape every error has."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["status"] == status and err["code"] and err["message"]
    assert err["request_id"] == resp.headers["x-request-id"]
    return dict(err)


def png_header_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A complete, valid 1-bit PNG of ``width`` x ``height`` pixels that compresses to a small file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed 1-bit pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bytes(size: tuple[int, int] = (320, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, format="JPEG")
    return out.getvalue()


# --- searching ----------------------------------------------------------------------
def test_text_search_returns_chunks_of_the_live_release(client: Any) -> None:
    resp = client.get("/api/v1/search", params={"q": "how do I connect to the VPN from home", "k": 3})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["release"] == "v1" and body["modality"] == "text" and body["k"] == 3
    assert len(body["hits"]) == 3
    top = body["hits"][0]
    assert top["file"] == "it/vpn-setup.md" and top["source"] == "docs" and top["release"] == "v1"
    assert top["heading"].startswith("VPN Setup") and "VPN" in top["text"] and top["thumbnail_url"] is None
    assert [h["score"] for h in body["hits"]] == sorted((h["score"] for h in body["hits"]), reverse=True)
    assert body["took_ms"] >= body["embed_ms"] + body["search_ms"] > 0


def test_source_filter_keeps_to_one_source(client: Any) -> None:
    resp = client.get("/api/v1/search", params={"q": "fire drill assembly point", "source": "docs"})
    assert resp.status_code == 200 and {h["source"] for h in resp.json()["hits"]} == {"docs"}
    err = error_of(client.get("/api/v1/search", params={"q": "fire drill", "source": "pictures"}), 400)
    assert "no text source 'pictures'" in err["message"] and "docs" in err["message"]


def test_image_search_finds_the_same_image_and_serves_its_thumbnail(client: Any) -> None:
    resp = client.post("/api/v1/search/image", params={"k": 3}, files={"file": ("query.png", STRIPES.read_bytes(), "image/png")})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["modality"] == "image" and body["release"] == "v1"
    top = body["hits"][0]
    assert top["file"] == "stripes/stripes-01.png" and top["score"] > 0.99
    assert top["thumbnail_url"] == f"/api/v1/thumbnails/v1/pictures/{top['file_id']}"

    thumb = client.get(top["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert "immutable" in thumb.headers["cache-control"] and thumb.headers["etag"]
    with Image.open(io.BytesIO(thumb.content)) as img:
        assert img.format == "JPEG" and max(img.size) <= 256
    assert len(thumb.content) < STRIPES.stat().st_size or len(thumb.content) < 30_000
    again = client.get(top["thumbnail_url"], headers={"If-None-Match": thumb.headers["etag"]})
    assert again.status_code == 304 and not again.content
    small = client.get(top["thumbnail_url"], params={"size": 64})
    with Image.open(io.BytesIO(small.content)) as img:
        assert max(img.size) == 64


def test_thumbnail_is_refused_once_the_workspace_file_no_longer_matches_the_release(client: Any, published: Any) -> None:
    hits = client.post("/api/v1/search/image", params={"k": 9}, files={"file": ("q.png", STRIPES.read_bytes(), "image/png")}).json()["hits"]
    hit = next(h for h in hits if h["file"].startswith("checkerboard/"))
    mirror_file = Path(published.cfg.workspace) / "mirror" / "pictures" / hit["file"]
    original = mirror_file.read_bytes()
    try:
        mirror_file.write_bytes(jpeg_bytes())
        err = error_of(client.get(hit["thumbnail_url"], params={"size": 100}), 410)
        assert hit["file"] in err["message"] and "changed after release 'v1'" in err["message"]
        mirror_file.unlink()
        assert "no longer in the workspace" in error_of(client.get(hit["thumbnail_url"], params={"size": 100}), 410)["message"]
    finally:
        mirror_file.write_bytes(original)
    assert client.get(hit["thumbnail_url"], params={"size": 100}).status_code == 200


def test_thumbnail_of_unknown_file_source_or_release_is_404(client: Any) -> None:
    assert "no file 'deadbeefdeadbeefdead'" in error_of(client.get("/api/v1/thumbnails/v1/pictures/deadbeefdeadbeefdead"), 404)["message"]
    docs_file = client.get("/api/v1/search", params={"q": "vpn"}).json()["hits"][0]["file_id"]
    assert "holds text, not images" in error_of(client.get(f"/api/v1/thumbnails/v1/docs/{docs_file}"), 404)["message"]
    assert error_of(client.get("/api/v1/thumbnails/v1/nosuch/deadbeefdeadbeefdead"), 404)["code"] == "unknown_file"
    assert error_of(client.get("/api/v1/thumbnails/v99/pictures/deadbeefdeadbeefdead"), 404)["code"] == "unknown_release"


def test_text_to_image_search_is_a_clear_400_when_the_image_model_has_no_text_encoder(client: Any) -> None:
    err = error_of(client.post("/api/v1/search/image", data={"q": "red circles"}), 400)
    assert "efficientnet-lite0" in err["message"] and "cannot embed text" in err["message"]


# --- bad input: a 4xx JSON error that says what is wrong; the service keeps serving ------------
LONG = "vpn " * 15_000  # 60 KB: the longest URL the test client sends (100 KB goes by POST below)


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"q": ""}, 422, "q: String should have at least 1 character"),
        ({"q": "   "}, 400, "the query is empty"),
        ({"q": LONG}, 422, "over service.max_query_chars"),
        ({"q": "vpn", "source": "nosuch"}, 400, "no text source 'nosuch'"),
        ({"q": "vpn", "source": "../etc"}, 422, "source: String should match pattern"),
        ({"q": "vpn", "release": "v99"}, 404, "no release 'v99'"),
        ({"q": "vpn", "release": "v1;drop"}, 422, "release: String should match pattern"),
        ({"q": "vpn", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"q": "vpn", "k": 10_000}, 422, "over service.max_k (100)"),
        ({"q": "vpn", "k": "ten"}, 422, "k: Input should be a valid integer"),
        ({}, 422, "q: Field required"),
    ],
)
def test_bad_text_queries(client: Any, params: dict[str, Any], status: int, says: str) -> None:
    err = error_of(client.get("/api/v1/search", params=params), status)
    assert says in err["message"]
    assert len(str(err)) < 2_000  # the 100 KB query is never echoed back


def test_search_by_post_with_a_json_body(client: Any) -> None:
    resp = client.post("/api/v1/search", json={"q": "how do I connect to the VPN from home", "k": 2, "source": "docs"})
    assert resp.status_code == 200 and resp.json()["hits"][0]["file"] == "it/vpn-setup.md" and len(resp.json()["hits"]) == 2
    huge = "vpn " * 25_600  # 100 KB
    err = error_of(client.post("/api/v1/search", json={"q": huge}), 422)
    assert "102,400 characters, over service.max_query_chars (2,000)" in err["message"] and len(str(err)) < 2_000
    assert error_of(client.post("/api/v1/search", json={"q": "vpn", "k": 0}), 422)["message"].startswith("k: ")
    assert error_of(client.post("/api/v1/search", json={"q": "vpn", "extra": 1}), 422)["message"].startswith("extra: ")
    assert error_of(client.post("/api/v1/search", content=b"{not json", headers={"content-type": "application/json"}), 422)


def upload(client: Any, name: str, data: bytes, content_type: str, **params: Any) -> Any:
    return client.post("/api/v1/search/image", params=params, files={"file": (name, data, content_type)})


def test_bad_uploads(client: Any) -> None:
    notes = b"just some text, not an image\n" * 10
    assert "not a readable image" in error_of(upload(client, "notes.png", notes, "image/png"), 400)["message"]
    truncated = jpeg_bytes()[:700]
    assert "corrupt or truncated" in error_of(upload(client, "cut.jpg", truncated, "image/jpeg"), 400)["message"]
    bomb = png_header_bomb()
    assert len(bomb) < 200_000
    err = error_of(upload(client, "huge.png", bomb, "image/png"), 413)
    assert "400000000 pixels" in err["message"] and "service.max_upload_pixels" in err["message"]
    over_limit = io.BytesIO()
    Image.new("1", (6000, 5000)).save(over_limit, format="PNG")  # 30 MP: under Pillow's own limit, over ours
    err = error_of(upload(client, "big.png", over_limit.getvalue(), "image/png"), 413)
    assert "6000x5000 = 30,000,000 pixels, over service.max_upload_pixels (25,000,000)" in err["message"]
    assert error_of(upload(client, "empty.png", b"", "image/png"), 400)["code"] == "bad_image"
    assert "declared as text/plain" in error_of(upload(client, "notes.txt", notes, "text/plain"), 415)["message"]
    assert error_of(upload(client, "q.png", STRIPES.read_bytes(), "image/png", k=0), 422)["code"] == "invalid_request"
    assert "over service.max_k" in error_of(upload(client, "q.png", STRIPES.read_bytes(), "image/png", k=10_000), 422)["message"]
    assert error_of(upload(client, "q.png", STRIPES.read_bytes(), "image/png", source="docs"), 400)["code"] == "bad_query"


def test_wrong_content_type_and_malformed_forms(client: Any) -> None:
    err = error_of(client.post("/api/v1/search/image", json={"file": "x"}), 415)
    assert "multipart/form-data" in err["message"]
    assert error_of(client.post("/api/v1/search/image", content=b"\x89PNG", headers={"content-type": "image/png"}), 415)
    assert "no image" in error_of(client.post("/api/v1/search/image", files={"other": ("a.png", b"x", "image/png")}), 400)["message"]
    both = client.post("/api/v1/search/image", data={"q": "stripes"}, files={"file": ("a.png", STRIPES.read_bytes(), "image/png")})
    assert "not both" in error_of(both, 400)["message"]
    broken = client.post("/api/v1/search/image", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"})
    assert 400 <= broken.status_code < 500 and broken.json()["error"]


def test_uploads_over_the_byte_limit_are_refused_before_they_are_read(published: Any) -> None:
    with make_client(published, max_upload_bytes=4096) as small:
        wait_ready(small)
        big = jpeg_bytes((2000, 2000)) + b"\x00" * 100_000
        err = error_of(upload(small, "big.jpg", big, "image/jpeg"), 413)
        assert "max_upload_bytes (4,096 bytes)" in err["message"]

        def chunked() -> Any:  # no Content-Length: the limit is enforced while the body streams in
            boundary = b"kbtest"
            yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="b.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
            for _ in range(50):
                yield b"\x00" * 4096
            yield b"\r\n--" + boundary + b"--\r\n"

        streamed = small.post("/api/v1/search/image", content=chunked(), headers={"content-type": "multipart/form-data; boundary=kbtest"})
        assert error_of(streamed, 413)["code"] == "upload_too_large"
        assert small.get("/api/v1/search", params={"q": "vpn"}).status_code == 200


def test_unknown_routes_and_methods_are_json_too(client: Any) -> None:
    assert "no such endpoint: GET /api/v1/nope" in error_of(client.get("/api/v1/nope"), 404)["message"]
    assert error_of(client.delete("/api/v1/search"), 405)["code"] == "method_not_allowed"


def test_the_service_keeps_serving_after_bad_input(client: Any) -> None:
    upload(client, "huge.png", png_header_bomb(), "image/png")
    client.get("/api/v1/search", params={"q": LONG})
    assert client.get("/api/v1/search", params={"q": "password rotation"}).status_code == 200
    assert client.get("/readyz").status_code == 200


# --- releases ------------------------------------------------------------------------
def test_releases_list_manifest_and_live(client: Any) -> None:
    listing = client.get("/api/v1/releases").json()
    assert listing["live"] == "v1" and listing["environment"] == "default"
    v1 = next(r for r in listing["releases"] if r["name"] == "v1")
    assert v1["state"] == "live" and v1["sources"]["docs"]["files"] == 4 and v1["sources"]["pictures"]["rows"] == 9

    manifest = client.get("/api/v1/releases/v1").json()
    assert manifest["state"] == "live" and manifest["embedders"]["text"]["model"] == "all-MiniLM-L6-v2"
    assert manifest["verification"]["passed"] is True
    assert "known: v1" in error_of(client.get("/api/v1/releases/v7"), 404)["message"]

    live = client.get("/api/v1/live").json()
    assert live["live"] == "v1" and live["refresh_seconds"] == 2.0 and live["checked_at"] > 0


def test_a_release_built_with_another_model_is_refused_with_409(client: Any, published: Any) -> None:
    record = published.release("v1")
    record.name = "other_model"
    record.state = "verified"
    record.embedders["text"] = {**record.embedders["text"], "model": "e5-large", "dim": 1024}
    published.registry.put(record)
    err = error_of(client.get("/api/v1/search", params={"q": "vpn", "release": "other_model"}), 409)
    assert "'e5-large' (1024-d)" in err["message"] and "'all-MiniLM-L6-v2' (384-d)" in err["message"]
    assert client.get("/api/v1/search", params={"q": "vpn", "release": "v1"}).json()["release"] == "v1"


# --- operations ------------------------------------------------------------------------
def test_health_readiness_info(client: Any) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["ready"] is True
    assert ready["checks"]["live"] == "v1" and ready["checks"]["collections_loaded"] is True
    assert ready["checks"]["models"] == {"image": True, "text": True}
    info = client.get("/api/v1/info").json()
    assert info["live"] == "v1" and info["environment"] == "default" and info["manifest_schema_version"] == MANIFEST_SCHEMA_VERSION
    assert info["embedders"]["text"]["dim"] == 384 and info["embedders"]["image"]["model"] == "efficientnet-lite0"


def test_metrics_count_requests_per_route_and_time_embedding_and_search(client: Any) -> None:
    client.get("/api/v1/search", params={"q": "parental leave"})
    text = client.get("/metrics").text
    assert 'kbrelease_http_requests_total{method="GET",route="/api/v1/search",status="200"}' in text
    assert 'kbrelease_http_request_duration_seconds_bucket{le="0.1",method="GET",route="/api/v1/search"}' in text
    assert 'kbrelease_embed_seconds_count{modality="text"}' in text and 'kbrelease_search_seconds_count{modality="text"}' in text
    assert 'kbrelease_live_release{environment="default",release="v1"} 1.0' in text
    assert 'kbrelease_model_ready{modality="image"} 1.0' in text
    assert 'route="/api/v1/thumbnails/{release}/{source}/{file_id}"' in text  # templates, not one label per file


def test_nothing_live_is_503_and_not_ready(published: Any, lite_server: str) -> None:
    from .conftest import isolated

    empty = published.cfg.model_copy(deep=True)
    for key, value in isolated(lite_server).items():
        section, field = key.split(".")
        setattr(getattr(empty, section), field, value)
    from kbrelease import KbRelease

    with KbRelease(empty, text_embedder=published.text_embedder, image_embedder=published.image_embedder) as kb, make_client(kb) as c:
        c.app.state.service.wait_ready(60)
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "nothing is live" in ready.json()["checks"]["live_error"]
        err = error_of(c.get("/api/v1/search", params={"q": "vpn"}), 503)
        assert err["code"] == "no_live_release" and "kbrelease publish" in err["message"]
        assert c.get("/api/v1/releases").json()["releases"] == []


def test_openapi_spec_is_published(client: Any) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert spec["info"]["title"] == "kbrelease"
    for path in ["/api/v1/search", "/api/v1/search/image", "/api/v1/releases", "/api/v1/releases/{name}", "/api/v1/live"]:
        assert path in spec["paths"]
    assert "/api/v1/releases/{name}/switch" in spec["paths"] and "/api/v1/rollback" in spec["paths"]
    assert "/healthz" in spec["paths"] and "/readyz" in spec["paths"] and "/metrics" in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/api/v1/search/image"]["post"]["requestBody"]["content"]


def test_web_page_is_served_with_its_assets_and_needs_no_network(client: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="static/app.js"' in page.text and 'href="static/style.css"' in page.text
    for asset in ("static/app.js", "static/style.css"):
        resp = client.get(f"/{asset}")
        assert resp.status_code == 200 and "://" not in resp.text.replace("http://www.w3.org", "")
    assert "://" not in page.text.replace("http://www.w3.org", "")  # no CDN: works offline


def test_check_service_searches_every_source_of_the_live_release_by_text_and_by_image(published: Any, client: Any) -> None:
    from local_http import UvicornServer

    with UvicornServer(client.app) as server:  # the module's app, warm, on a real socket
        report = published.check(service_url=server.url)

    smoke = {f.subject.removeprefix(f"service {server.url} source "): f for f in report.findings if " source " in f.subject}
    assert report.ok, str(report)
    assert set(smoke) == {"docs", "pictures"}
    assert smoke["docs"].message.startswith("text search: 1 hit(s) from release v1 in ")
    assert smoke["pictures"].message.startswith("image search: 1 hit(s) from release v1 in ")
    assert {f.level for f in smoke.values()} == {"ok"}
