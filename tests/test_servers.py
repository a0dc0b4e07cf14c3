"""Self-test of tests/servers.py: each real server starts, answers, and really stops."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from servers import HOST, MilvusLiteServer, MilvusServer, S3Server, free_port, free_ports


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind((HOST, port))
    ports = free_ports(12)
    assert len(set(ports)) == 12


def test_s3_server_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import s3fs

    with S3Server() as s3:
        assert s3.make_bucket("kb-test") == "s3://kb-test"
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        client = boto3.client("s3")  # endpoint, keys and region all from the environment
        client.put_object(Bucket="kb-test", Key="docs/a.md", Body=b"# hello")
        fs = s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=os.environ["S3_ENDPOINT_URL"])
        assert fs.cat("kb-test/docs/a.md") == b"# hello"
        s3.reset()
        assert client.list_buckets()["Buckets"] == []
        port = s3.port
    assert not _listening(port)


def _round_trip(uri: str) -> int:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri, dedicated=True)
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
        schema.add_field("meta", DataType.JSON)
        index = client.prepare_index_params()
        index.add_index("vector", metric_type="COSINE", index_type="AUTOINDEX")
        client.create_collection("roundtrip", schema=schema, index_params=index)
        client.insert("roundtrip", [{"id": f"d{i}", "vector": [1.0, i, 0.5, 0.0], "meta": {"i": i}} for i in range(3)])
        # Milvus 2.3 defaults to Bounded consistency: read your own writes with Strong.
        rows = client.query("roundtrip", filter="", output_fields=["count(*)"], consistency_level="Strong")
        hits = client.search("roundtrip", data=[[1.0, 0.0, 0.5, 0.0]], limit=1, output_fields=["meta"], consistency_level="Strong")
        assert hits[0][0]["entity"]["meta"] == {"i": 0}
        client.drop_collection("roundtrip")
        return int(rows[0]["count(*)"])
    finally:
        client.close()


def test_milvus_lite_server_round_trip(tmp_path: Path) -> None:
    if not MilvusLiteServer.available():
        pytest.skip("milvus-lite is not installed")
    with MilvusLiteServer(tmp_path / "lite") as lite:
        assert lite.uri == f"http://127.0.0.1:{lite.port}"
        assert _round_trip(lite.uri) == 3
        pid, port = lite.pid, lite.port
    assert pid is not None and not _alive(pid)
    assert not _listening(port)


def test_missing_milvus_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"pip install milvus==2\.3\.5"):
        MilvusServer(tmp_path, executable=tmp_path / "no-such-milvus-server").start()


@pytest.mark.milvus_server
@pytest.mark.slow
def test_milvus_server_round_trip(tmp_path: Path) -> None:
    if not MilvusServer.available():
        pytest.skip("milvus-server is not installed (pip install milvus==2.3.5)")
    with MilvusServer(tmp_path / "milvus") as milvus:
        assert milvus.uri == f"http://127.0.0.1:{milvus.port}"
        assert _round_trip(milvus.uri) == 3
        pid = milvus.pid
        assert pid is not None
        group = milvus.pids()
        assert pid in group and len(group) >= 2  # the wrapper and the milvus binary
        ports = [milvus.port, milvus.ports["etcd_port"], milvus.ports["etcd_peer_port"]]
    assert milvus.pids() == []
    assert not any(_alive(p) for p in group)
    assert not any(_listening(port) for port in ports)
