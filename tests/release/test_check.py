"""`kbrelease check`: the configured models, the data index, the live release and a running service agree, or it says what breaks."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kbrelease import KbRelease, __version__, load_config
from kbrelease.cli import app
from kbrelease.release.schema import MANIFEST_SCHEMA_VERSION

from helpers import OTHER_MODEL, write_config

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "tests" / "package" / "fixtures" / "manifest_v1.json"


SEARCH_ANSWER = {"release": "v1", "hits": [{"file": "vpn.md", "score": 0.5}], "took_ms": 3.0}


@contextmanager
def info_service(body: dict[str, Any] | None, status: int = 200, search: dict[str, Any] | None = SEARCH_ANSWER) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering GET /api/v1/info with ``body`` and /api/v1/search with ``search``
    (a service that answers wrongly, which a real one cannot be made to do)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/api/v1/search?") and search is not None:
                data = json.dumps(search).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            data = json.dumps(body).encode() if self.path == "/api/v1/info" and body is not None else b"{}"
            self.send_response(status if self.path == "/api/v1/info" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, lite_server: str, text_embedder: Any, image_embedder: Any) -> Iterator[Path]:
    """A config whose environment has v1 live (published once for the module)."""
    folder = tmp_path_factory.mktemp("check")
    corpus = folder / "corpus"
    (corpus / "text").mkdir(parents=True)
    (corpus / "text" / "vpn.md").write_text((REPO / "examples/corpus/text/it/vpn-setup.md").read_text(encoding="utf-8"), encoding="utf-8")
    config = write_config(folder, corpus, f"milvus:\n  uri: {lite_server}\n  db_prefix: chk_\n  registry_db: chk_registry\n").read_text(encoding="utf-8")
    path = folder / "kbrelease.yaml"
    path.write_text(config.replace("  - name: pictures\n", "").replace(f"    path: {corpus / 'images'}\n    modality: image\n", ""), encoding="utf-8")
    with KbRelease(load_config(path, env={}), text_embedder=text_embedder, image_embedder=image_embedder) as kb:
        kb.publish()
    return path


def _service_info(kb: KbRelease, **changes: Any) -> dict[str, Any]:
    text = vars(kb.identity("text"))
    return {
        "kbrelease_version": __version__,
        "manifest_schema_version": MANIFEST_SCHEMA_VERSION,
        "environment": kb.cfg.environment,
        "live": "v1",
        "embedders": {"text": text},
    } | changes


def test_a_consistent_environment_and_service_pass(published: Path) -> None:
    with KbRelease(load_config(published, env={})) as kb, info_service(_service_info(kb)) as url:
        report = kb.check(service_url=url)

    assert report.ok, str(report)
    assert not [f for f in report.findings if f.level != "ok"], str(report)
    subjects = [f.subject for f in report.findings]
    assert subjects == ["text model", "data index", "live release v1", f"service {url}", f"service {url} source docs"]
    assert "compatible (0 warning(s))" in str(report)


def test_a_source_whose_search_finds_nothing_fails_the_check(published: Path) -> None:
    with KbRelease(load_config(published, env={})) as kb, info_service(_service_info(kb), search={"release": "v1", "hits": []}) as url:
        report = kb.check(service_url=url)

    assert not report.ok
    assert [f.message for f in report.findings if f.subject == f"service {url} source docs"] == [
        "the text search found nothing in release v1; the collection may be empty"
    ]


@pytest.mark.parametrize(
    ("changes", "level", "message"),
    [
        ({"embedders": {"text": {"model": "bge-small-en", "dim": 384}}}, "error", r"embeds text queries with 'bge-small-en'.*holds 'all-MiniLM-L6-v2'"),
        ({"embedders": {}}, "error", r"has no text embedder but the live release has text sources"),
        ({"environment": "prod"}, "error", r"serves environment 'prod', this check is for 'default'; pass --env prod"),
        ({"live": "v0"}, "warning", r"serves release v0 but the live pointer says v1; it has not followed the last switch"),
        ({"manifest_schema_version": 1}, "error", r"reads manifest schema up to 1 but the live release is schema 3; upgrade the service"),
        ({"manifest_schema_version": 9, "kbrelease_version": "9.0.0"}, "warning", r"is newer \(kbrelease 9\.0\.0, schema 9\) than this kbrelease"),
    ],
)
def test_a_service_that_disagrees_is_reported(published: Path, changes: dict[str, Any], level: str, message: str) -> None:
    with KbRelease(load_config(published, env={})) as kb, info_service(_service_info(kb, **changes)) as url:
        report = kb.check(service_url=url)

    found = [f for f in report.findings if f.subject == f"service {url}" and f.level == level]
    assert found and any(re.search(message, f.message) for f in found), str(report)
    assert report.ok == (level != "error")


def test_an_unreachable_or_foreign_service_is_an_error(published: Path) -> None:
    with KbRelease(load_config(published, env={})) as kb:
        with info_service(None, status=404) as url:
            not_found = kb.check(service_url=url)
        gone = kb.check(service_url="http://127.0.0.1:9", timeout=1)

    assert not not_found.ok and "answered HTTP 404" in str(not_found)
    assert not gone.ok and "cannot be reached" in str(gone)


def test_the_cli_exits_5_when_the_configured_model_would_break_queries(published: Path) -> None:
    runner = CliRunner()

    good = runner.invoke(app, ["-c", str(published), "check", "--json"])
    bad = runner.invoke(app, ["-c", str(published), "check"], env=OTHER_MODEL)

    assert good.exit_code == 0, good.output
    data = json.loads(good.stdout)
    assert (data["ok"], data["errors"], data["environment"], data["reads"]) == (True, 0, "default", [1, 2, 3])
    assert bad.exit_code == 5
    assert "FAIL  live release v1: text vectors are 'all-MiniLM-L6-v2'" in bad.stdout
    assert "configured model is 'bge-small-en'" in bad.stdout and "queries would be refused" in bad.stdout
    assert bad.stdout.rstrip().endswith("error(s): queries would break")


def test_releases_of_older_and_newer_manifests_and_a_lost_database(published: Path) -> None:
    """Runs last in this module: it rewrites the live release's registry row and drops its database."""
    with KbRelease(load_config(published, env={})) as kb:
        record = kb.release("v1")
        old = json.loads(V1.read_text(encoding="utf-8")) | {
            k: v for k, v in record.asdict().items() if k in ("name", "environment", "database", "sources", "embedders", "data_index_checksum")
        }
        old.pop("origin", None)
        old["schema_version"] = 1
        kb.registry._upsert(f"{kb.registry.env}/release/v1", "release", old)  # as the older kbrelease wrote it

        migrated = kb.check()
        assert migrated.ok, str(migrated)
        assert "models and collections match, migrated from schema 1" in str(migrated)
        assert kb.status()["releases"][0]["state"] == "live"

        kb.registry._upsert(f"{kb.registry.env}/release/v1", "release", old | {"schema_version": 4})
        newer = kb.check()
        assert not newer.ok
        assert "FAIL  live release v1: release 'v1' has manifest schema version 4, newer than kbrelease" in str(newer)

        kb.registry._upsert(f"{kb.registry.env}/release/v1", "release", record.asdict())
        kb.store.drop_database(record.database)
        lost = kb.check()
        assert not lost.ok and f"its database {record.database} is missing from Milvus" in str(lost)
