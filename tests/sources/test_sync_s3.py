"""Sync from a real S3-compatible server on 127.0.0.1 (moto's server, spoken to over HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbrelease import ConfigError, KbRelease, load_config
from kbrelease.errors import SourceUnreachable
from kbrelease.index.data_index import read_source_index
from kbrelease.sources.sync import sync

from servers import S3Server, free_port


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    s3.reset()
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    s3.make_bucket("kb-data")
    client = s3.client()
    client.put_object(Bucket="kb-data", Key="text/it/vpn.md", Body=b"# VPN\n\nRun fernlink up to connect from home.\n")
    client.put_object(Bucket="kb-data", Key="text/policies/travel.txt", Body="Trains are booked second class. Caf\u00e9 receipts count.\n".encode())
    client.put_object(Bucket="kb-data", Key="text/notes/skip.odt", Body=b"PK\x03\x04 an OpenDocument file: no reader for it")
    return client


def _seed_env(s3: S3Server, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **s3.env(),
        "S3_PATH_TEXT": "s3://kb-data/text",
        "COLLECTION_NAME_TEXT": "kb_text",
        "KBRELEASE_WORKSPACE": str(tmp_path / "ws"),
        **extra,
    }


def test_sync_from_s3_with_the_seed_variables_is_incremental(s3: S3Server, bucket: Any, tmp_path: Path) -> None:
    cfg = load_config(env=_seed_env(s3, tmp_path))

    first, _ = sync(cfg)

    mirror = tmp_path / "ws" / "mirror" / "text"
    assert sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file()) == ["it/vpn.md", "policies/travel.txt"]
    records = read_source_index(tmp_path / "ws" / "index" / "text.parquet")
    assert [r.relative_path for r in records] == ["it/vpn.md", "policies/travel.txt"]
    assert all(len(r.etag) == 32 for r in records)  # S3 etags are recorded
    assert first.sources[0].downloaded == 2

    second, _ = sync(cfg)
    assert (second.sources[0].downloaded, second.sources[0].unchanged) == (0, 2)

    bucket.put_object(Bucket="kb-data", Key="text/it/vpn.md", Body=b"# VPN\n\nNow use fernlink up --tcp.\n")
    bucket.delete_object(Bucket="kb-data", Key="text/policies/travel.txt")
    third, _ = sync(cfg)

    s = third.sources[0]
    assert (s.downloaded, s.deleted, s.files) == (1, 1, 1)
    assert (mirror / "it/vpn.md").read_text(encoding="utf-8") == "# VPN\n\nNow use fernlink up --tcp.\n"


def test_publish_from_s3_like_the_seed_workflow(s3: S3Server, bucket: Any, tmp_path: Path, lite_server: str, text_embedder: Any) -> None:
    env = _seed_env(s3, tmp_path, MILVUS_URI=lite_server, MILVUS_DB_PREFIX="seeds3_")
    with KbRelease(load_config(env=env), text_embedder=text_embedder) as kb:
        info = kb.publish()
        hits = kb.search("connect from home", k=1)

    assert info.live == "v1"
    assert info.release.sources["text"].collection == "kb_text"
    assert hits[0].file == "it/vpn.md"


def test_missing_credentials_name_the_fix(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    env = {"S3_PATH_TEXT": "s3://kb-data/text", "S3_ENDPOINT_URL": s3.endpoint_url, "KBRELEASE_WORKSPACE": str(tmp_path / "ws")}

    with pytest.raises(ConfigError, match=r"no S3 credentials found.*AWS_ACCESS_KEY_ID"):
        sync(load_config(env=env))


def test_unreachable_endpoint_is_one_clear_error(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
    env = {"S3_PATH_TEXT": "s3://kb-data/text", "S3_ENDPOINT_URL": dead, "KBRELEASE_WORKSPACE": str(tmp_path / "ws")}

    started = time.monotonic()
    with pytest.raises(SourceUnreachable, match=r"cannot reach the S3 endpoint.*S3_ENDPOINT_URL"):
        sync(load_config(env=env))
    assert time.monotonic() - started < 60


def test_index_only_hashes_s3_objects_without_a_mirror(s3: S3Server, bucket: Any, tmp_path: Path) -> None:
    import hashlib

    cfg = load_config(env=_seed_env(s3, tmp_path))

    first, _ = sync(cfg, index_only=True)
    again, _ = sync(cfg, index_only=True)

    assert not (tmp_path / "ws" / "mirror" / "text").exists()
    records = read_source_index(tmp_path / "ws" / "index" / "text.parquet")
    body = bucket.get_object(Bucket="kb-data", Key="text/it/vpn.md")["Body"].read()
    assert records[0].checksum == hashlib.sha256(body).hexdigest()
    assert (first.sources[0].downloaded, again.sources[0].downloaded, again.sources[0].unchanged) == (2, 0, 2)
    assert first.index_checksum == again.index_checksum
