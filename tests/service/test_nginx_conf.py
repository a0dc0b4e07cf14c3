"""`kbrelease serve nginx-conf`: a complete config nginx accepts, retrying the next replica on errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbrelease.cli import app
from kbrelease.errors import ConfigError
from kbrelease.service.nginx import render_nginx_conf

from .procs import require_binary

runner = CliRunner()


def test_rendered_config_balances_replicas_and_retries_the_next_one() -> None:
    conf = render_nginx_conf(["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"], 8080, max_upload_bytes=1_000_000)
    assert conf.count("max_fails=1 fail_timeout=5s;") == 3
    assert "listen 127.0.0.1:8080;" in conf
    assert "proxy_next_upstream error timeout http_502 http_503 http_504;" in conf
    # image search (a POST that changes nothing) is retried too; switch and rollback are not
    image = conf.split("location = /api/v1/search/image {", 1)[1].split("}", 1)[0]
    assert "http_504 non_idempotent;" in image
    assert "proxy_next_upstream_tries 3;" in conf
    assert f"client_max_body_size {1_000_000 + 64 * 1024};" in conf


@pytest.mark.parametrize(
    ("upstreams", "listen", "says"),
    [
        ([], 8080, "at least one --upstream"),
        (["localhost"], 8080, "'localhost' is not HOST:PORT"),
        (["127.0.0.1:99999"], 8080, "is not HOST:PORT"),
        (["127.0.0.1:8001", "127.0.0.1:8001"], 8080, "listed twice"),
        (["127.0.0.1:8001"], "eighty", "--listen 'eighty'"),
    ],
)
def test_bad_addresses_are_refused(upstreams: list[str], listen: str | int, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        render_nginx_conf(upstreams, listen)


def test_nginx_accepts_the_config_it_is_given(tmp_path: Path) -> None:
    nginx = require_binary("/usr/sbin/nginx", "nginx")
    result = runner.invoke(
        app, ["serve", "nginx-conf", "-u", "127.0.0.1:8001", "-u", "127.0.0.1:8002", "--listen", "18080", "-o", str(tmp_path / "nginx.conf")]
    )
    assert result.exit_code == 0, result.output
    assert f"nginx -p {tmp_path}" in result.output
    checked = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


def test_cli_prints_the_config_and_reports_bad_input_in_one_line() -> None:
    printed = runner.invoke(app, ["serve", "nginx-conf", "-u", "127.0.0.1:8001"])
    assert printed.exit_code == 0 and printed.output.startswith("# Rendered by `kbrelease serve nginx-conf`: 1 replica(s)")
    bad = runner.invoke(app, ["serve", "nginx-conf", "-u", "nowhere"])
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: --upstream 'nowhere' is not HOST:PORT; write it like 127.0.0.1:8001"
