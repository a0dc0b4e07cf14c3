"""Seed 003's own client example, run against a real `kbrelease serve` on 127.0.0.1 (issue 15).

The example below is the seed's text, copied unchanged but for its import line
(``dataindex_client`` is kbrelease's ``kbrelease.index.client``) and the
server's address (the seed's https://dataindex-api.company.com is replaced by
the test server's URL when it runs). The same server then answers the
metadata filters, file contents streaming, and access_config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kbrelease import KbRelease, load_config
from kbrelease.errors import DataIndexError, NotInIndex, ServiceError
from kbrelease.index.client import DataIndexClient, FileData, FileInfo, plain_checksum
from service.procs import ServeProcess

pytestmark = pytest.mark.slow

SEED_EXAMPLE = """
# DataIndexHub API示例
from kbrelease.index.client import DataIndexClient

client = DataIndexClient(base_url="https://dataindex-api.company.com")

# 根据Bundle获取数据集
dataset = client.get_dataset(
    bundle_name="foundational_model",
    bundle_version="v1.0.0-2025.25"
)

# 获取特定时间范围的数据
files = client.list_files(
    bundle_name="foundational_model",
    bundle_version="v1.0.0-2025.25",
    channel="image_original",
    start_time="2025-06-01T00:00:00Z",
    end_time="2025-06-02T00:00:00Z"
)

# 流式数据加载
for batch in client.stream_data(
    bundle_name="foundational_model", 
    bundle_version="v1.0.0-2025.25",
    batch_size=1000
):
    process_batch(batch)
"""  # noqa: W291 - the seed's text as it is, trailing blank included
SEED_URL = "https://dataindex-api.company.com"
PUBLIC_URL = "https://dataindex.example.test"
START = datetime(2025, 6, 1, 12, tzinfo=UTC)

SPEC = """\
name: foundational_model
version: v1.0.0-2025.25
type: weekly
sources:
  - channel: image_original
    version: "1.2.0"
  - channel: docs
"""


def _write(path: Path, data: bytes, when: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (when.timestamp(), when.timestamp()))


def make_sources(root: Path) -> None:
    """8 camera frames 6 hours apart from 2025-06-01 12:00 (the last two on June 2-3), each with a sidecar; two Markdown notes."""
    for i in range(8):
        rel = f"2025/06/{1 + i // 4:02d}/img_{i:03d}.jpg"
        _write(root / "img" / rel, bytes([i]) * (300 + i), START + timedelta(hours=6 * i))
        meta = {"camera_id": "front" if i % 2 == 0 else "rear", "weather": "sunny" if i < 4 else "rain", "frame": i}
        (root / "img" / f"{rel}.meta.json").write_text(json.dumps(meta), encoding="utf-8")
    _write(root / "docs" / "vpn.md", b"---\ntitle: VPN\nteam: infra\n---\n# VPN\n\nRun fernlink up.\n", START)
    _write(root / "docs" / "plain.md", b"# Plain\n\nNo front matter.\n", START)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, lite_server: str) -> Iterator[tuple[str, Any]]:
    """One synced workspace with the resolved bundle, served by `kbrelease serve` for the whole module (no token: the seed's client sends none)."""
    tmp_path = tmp_path_factory.mktemp("seed003")
    make_sources(tmp_path / "src")
    config = tmp_path / "kbrelease.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "workspace": str(tmp_path / "ws"),
                "milvus": {"uri": lite_server, "db_prefix": "seed003_", "registry_db": "seed003_registry"},
                "sources": [
                    {"name": "image_original", "path": str(tmp_path / "src" / "img"), "modality": "image", "version": "1.2.0"},
                    {"name": "docs", "path": str(tmp_path / "src" / "docs"), "modality": "text"},
                ],
            }
        ),
        encoding="utf-8",
    )
    spec = tmp_path / "bundles" / "foundational_model.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC, encoding="utf-8")
    env = {"KBRELEASE_BASE_URL": PUBLIC_URL}
    cfg = load_config(config, env=env)
    with KbRelease(cfg) as kb:
        kb.sync()
        kb.index_bundle(spec)
    server = ServeProcess(config, env=env).start(timeout=120, ready=False)
    try:
        yield server.uri, cfg
    finally:
        server.stop()


def test_the_seeds_example_runs_unchanged(served: tuple[str, Any]) -> None:
    url, _ = served
    batches: list[list[FileInfo]] = []
    namespace: dict[str, Any] = {"process_batch": batches.append}

    exec(compile(SEED_EXAMPLE.replace(SEED_URL, url), "seed_003_example", "exec"), namespace)

    dataset, files = namespace["dataset"], namespace["files"]
    assert (dataset.name, dataset.version, dataset.meta["bundle_type"]) == ("foundational_model", "v1.0.0-2025.25", "weekly")
    assert [(c.channel, c.version, c.file_count) for c in dataset.data_manifest] == [("image_original", "1.2.0", 8), ("docs", "", 2)]
    # June 1 from 00:00 to June 2 00:00 inclusive: the frames at 12:00, 18:00 and June 2 00:00.
    assert [f.relative_path for f in files] == ["2025/06/01/img_000.jpg", "2025/06/01/img_001.jpg", "2025/06/01/img_002.jpg"]
    assert [f.metadata["camera_id"] for f in files] == ["front", "rear", "front"]
    assert files[0].sha256 == "sha256:" + files[0].checksum
    assert [len(b) for b in batches] == [10]
    # access_config: in the API (the configured public URL) and in bundle.yaml on disk.
    assert dataset.access_config["base_url"] == PUBLIC_URL
    assert dataset.access_config["endpoints"]["list_files"] == "/api/v1/bundles/foundational_model/files"
    client: DataIndexClient = namespace["client"]
    client.close()


def test_access_config_is_written_into_bundle_yaml(served: tuple[str, Any]) -> None:
    _, cfg = served
    on_disk = yaml.safe_load((Path(cfg.workspace) / "bundles" / "foundational_model" / "v1.0.0-2025.25" / "bundle.yaml").read_text(encoding="utf-8"))
    assert on_disk["access_config"] == {
        "base_url": PUBLIC_URL,
        "authentication": "none",
        "endpoints": {
            "list_files": "/api/v1/bundles/foundational_model/files",
            "download_batch": "/api/v1/bundles/foundational_model/download",
            "streaming": "/api/v1/bundles/foundational_model/stream",
        },
    }


def test_metadata_filters_in_the_data_index_api(served: tuple[str, Any]) -> None:
    url, _ = served
    with DataIndexClient(url, backoff=0.01) as client:
        front = client.list_files(bundle_name="foundational_model", where='camera_id == "front" and weather == "rain"')
        assert [f.relative_path for f in front] == ["2025/06/02/img_004.jpg", "2025/06/02/img_006.jpg"]
        assert [f.relative_path for f in client.list_files("foundational_model", channel="docs", where='team == "infra"')] == ["vpn.md"]
        positional = client.list_files("foundational_model", "v1.0.0-2025.25", "image_original", where="frame >= 6")
        assert [f.metadata["frame"] for f in positional] == [6, 7]
        streamed = [f.file_id for b in client.stream_data("foundational_model", batch_size=2, where="frame in [1, 2, 3]") for f in b]
        assert len(streamed) == 3
        # Injection attempts and bad filters: a 400 naming the problem, never a query.
        for bad, named in [
            ('camera_id == "x" or 1 == 1', "one metadata key and one literal"),
            ("__import__('os').system('true')", "call is not allowed"),
            ('camera_id == "front"; drop', "not valid"),
        ]:
            with pytest.raises(DataIndexError, match=named):
                client.list_files("foundational_model", where=bad)
        with pytest.raises(TypeError, match="disagree"):
            client.get_dataset("foundational_model", bundle_name="other")
    answer = httpx.get(f"{url}/api/v1/bundles/foundational_model/files", params={"where": "camera_id = 'front'"}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_query" and "not valid" in answer.json()["error"]["message"]


def test_stream_file_contents_checked_and_resumable(served: tuple[str, Any], tmp_path: Path) -> None:
    url, cfg = served
    with DataIndexClient(url, backoff=0.01) as client:
        stream = client.stream_data(bundle_name="foundational_model", bundle_version="v1.0.0-2025.25", channel="image_original", batch_size=3, contents=True)
        batches = list(stream)
        assert [len(b) for b in batches] == [3, 3, 2]
        items: list[FileData] = [item for b in batches for item in b]
        for i, item in enumerate(items):
            assert item.data == bytes([i]) * (300 + i) and item.offset == 0
            assert item.info.relative_path.endswith(f"img_{i:03d}.jpg")

        # Resume inside the fifth file, at byte 100: the rest of it, then the files after it.
        at = (items[4].info.file_id, 100)
        resumed = [x for b in client.stream_data("foundational_model", channel="image_original", batch_size=3, contents=True, resume=at) for x in b]
        assert [x.info.file_id for x in resumed] == [x.info.file_id for x in items[4:]]
        assert (resumed[0].offset, resumed[0].data) == (100, items[4].data[100:])
        assert resumed[0].position == (items[4].info.file_id, len(items[4].data))
        with pytest.raises(NotInIndex, match="resume"):
            list(client.stream_data("foundational_model", channel="docs", contents=True, resume=(items[0].info.file_id, 0)))

        # A mirror file changed behind the index's back (same size): the client refuses its bytes.
        mirror = Path(cfg.workspace) / "mirror" / "image_original" / items[1].info.relative_path
        mirror.write_bytes(b"\xff" * len(items[1].data))
        try:
            with pytest.raises(ServiceError, match="does not match the index"):
                list(client.stream_data("foundational_model", channel="image_original", batch_size=3, contents=True))
        finally:
            mirror.write_bytes(items[1].data)


def test_both_checksum_forms_are_accepted() -> None:
    digest = "ab" * 32
    assert plain_checksum(digest) == plain_checksum("sha256:" + digest) == plain_checksum("SHA256:" + digest) == digest
    record = {
        "file_id": "f1",
        "source": "s",
        "relative_path": "a.jpg",
        "timestamp": "2025-06-01T12:00:00+00:00",
        "size_bytes": 1,
        "checksum": "sha256:" + digest,
        "etag": "",
        "metadata": {},
    }
    assert FileInfo.from_json(record).checksum == digest
    assert FileInfo.many([record])[0].sha256 == "sha256:" + digest
