"""The monitor against a real S3 server (moto on 127.0.0.1), and its configuration's secrets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kbrelease import ConfigError, load_config
from kbrelease.index.data_index import read_bundle
from kbrelease.monitor.checks import checksums, storage
from kbrelease.sources.sync import sync

from servers import S3Server


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    with S3Server() as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        server.make_bucket("kb-data")
        yield server


def test_checksums_and_storage_of_an_s3_source(s3: S3Server, tmp_path: Path) -> None:
    client = s3.client()
    for i in range(4):
        client.put_object(Bucket="kb-data", Key=f"text/note-{i}.md", Body=f"# Note {i}\n\nbody {i}\n".encode())
    cfg = load_config(env={**s3.env(), "S3_PATH_TEXT": "s3://kb-data/text", "KBRELEASE_WORKSPACE": str(tmp_path / "ws")})
    sync(cfg)
    folder = cfg.workspace / "index"
    assert checksums(cfg, read_bundle(folder), folder, "all")[0].status == "ok"

    client.delete_object(Bucket="kb-data", Key="text/note-0.md")
    client.put_object(Bucket="kb-data", Key="text/note-1.md", Body=b"# Note X\n\nbody X\n")  # same size, new object: new etag
    result = checksums(cfg, read_bundle(folder), folder, "all")[0]

    assert result.status == "problem"
    assert {k: result.details[k] for k in ("ok", "drift", "missing", "corrupt")} == {"ok": 2, "drift": 1, "missing": 1, "corrupt": 0}
    assert [r.status for r in storage(cfg, None)] == ["ok"]

    cfg.sources[0].path = "s3://no-such-bucket/text"
    gone = storage(cfg, None)[0]
    assert gone.status == "problem"
    assert "no-such-bucket" in gone.message


def test_webhooks_and_the_api_token_are_secrets_from_the_environment_only(tmp_path: Path) -> None:
    cfg_file = tmp_path / "kbrelease.yaml"
    cfg_file.write_text("monitor:\n  completeness_threshold: 0.95\n  checksum_sample: all\n", encoding="utf-8")
    env = {"KBRELEASE_ALERT_WEBHOOKS": "https://hooks.example/T1/secret-a, https://hooks.example/T2/secret-b", "KBRELEASE_API_TOKEN": "tok-123"}

    cfg = load_config(cfg_file, env=env)

    assert [u.get_secret_value() for u in cfg.monitor.webhook_urls] == ["https://hooks.example/T1/secret-a", "https://hooks.example/T2/secret-b"]
    assert cfg.service.api_token is not None and cfg.service.api_token.get_secret_value() == "tok-123"
    assert (cfg.monitor.completeness_threshold, cfg.monitor.checksum_sample) == (0.95, "all")
    dumped = str(cfg.redacted()) + repr(cfg)
    assert "secret-a" not in dumped and "tok-123" not in dumped

    for text, var in (("monitor:\n  webhook_urls: [https://x]\n", "KBRELEASE_ALERT_WEBHOOKS"), ("service:\n  api_token: t\n", "KBRELEASE_API_TOKEN")):
        cfg_file.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=f"must not be written in the config file; set {var} in the environment instead"):
            load_config(cfg_file, env={})

    cfg_file.unlink()
    with pytest.raises(ConfigError, match="KBRELEASE_ALERT_WEBHOOKS: entry #2 is not an http\\(s\\) URL") as bad:
        load_config(None, env={"KBRELEASE_ALERT_WEBHOOKS": "https://ok.example/x,ftp://secret-c"})
    assert "secret-c" not in str(bad.value)
    with pytest.raises(ConfigError, match="checksum_sample"):
        load_config(None, env={"KBRELEASE_CHECKSUM_SAMPLE": "0"})
