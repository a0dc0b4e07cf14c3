"""nginx in front of N replicas of ``kbrelease serve``: a complete config, rendered from code.

Every replica follows the same live pointer, so any of them can answer any
request; nginx spreads the load and, when a replica dies or is not ready,
retries the request on the next one (``proxy_next_upstream``), so a client
sees no failed request. Run it unprivileged with its own prefix::

    kbrelease serve nginx-conf --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002 --listen 8080 > /srv/kb/nginx.conf
    nginx -p /srv/kb -c /srv/kb/nginx.conf -e stderr -g 'daemon off;'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kbrelease.errors import ConfigError

_HOSTPORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
MULTIPART_SLACK = 64 * 1024


def _check_address(value: str, what: str) -> str:
    m = _HOSTPORT.match(value)
    if not m or not 0 < int(m.group(1)) < 65536:
        raise ConfigError(f"{what} {value!r} is not HOST:PORT; write it like 127.0.0.1:8001")
    return value


def listen_address(listen: str | int) -> str:
    """``8080`` → ``127.0.0.1:8080`` (loopback unless a host is given)."""
    text = str(listen)
    return _check_address(f"127.0.0.1:{text}" if text.isdigit() else text, "--listen")


def _proxy(indent: str, tries: int, retry_posts: bool) -> list[str]:
    retry_on = "error timeout http_502 http_503 http_504" + (" non_idempotent" if retry_posts else "")
    return [
        f"{indent}proxy_pass http://kbrelease;",
        f"{indent}proxy_http_version 1.1;",
        f'{indent}proxy_set_header Connection "";',
        f"{indent}proxy_set_header Host $host;",
        f"{indent}proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        f"{indent}proxy_set_header X-Forwarded-Proto $scheme;",
        f"{indent}proxy_set_header X-Request-ID $request_id;",
        f"{indent}proxy_connect_timeout 1s;",
        f"{indent}proxy_read_timeout 30s;",
        f"{indent}# a dead, restarting or still-warming replica (503): the request goes to the next one",
        f"{indent}proxy_next_upstream {retry_on};",
        f"{indent}proxy_next_upstream_tries {tries};",
        f"{indent}proxy_next_upstream_timeout 15s;",
    ]


def render_nginx_conf(
    upstreams: Sequence[str],
    listen: str | int = 8080,
    *,
    max_upload_bytes: int = 10 * 1024 * 1024,
    worker_processes: str | int = "auto",
    access_log: str | None = None,
    foreground: bool = False,
) -> str:
    """A complete ``nginx.conf`` balancing ``upstreams`` (HOST:PORT of each replica) on ``listen``.

    Paths (pid, temp folders) are relative to nginx's prefix (``nginx -p DIR``),
    so it runs without root. ``access_log`` is a path or None (off).
    """
    if not upstreams:
        raise ConfigError("give at least one --upstream HOST:PORT (one per `kbrelease serve` replica)")
    servers = [_check_address(u, "--upstream") for u in upstreams]
    if len(set(servers)) != len(servers):
        raise ConfigError("an --upstream is listed twice; give each replica once")
    tries = max(2, min(len(servers), 5))
    body_limit = max_upload_bytes + MULTIPART_SLACK
    lines = [
        f"# Rendered by `kbrelease serve nginx-conf`: {len(servers)} replica(s) of `kbrelease serve` behind {listen_address(listen)}.",
        "# Run: nginx -p <prefix dir> -c <this file> -e stderr" + ("" if foreground else " -g 'daemon off;'"),
        f"worker_processes {worker_processes};",
        *(["daemon off;"] if foreground else []),
        "pid nginx.pid;",
        "error_log stderr warn;",
        "",
        "events {",
        "    worker_connections 1024;",
        "}",
        "",
        "http {",
        f"    access_log {access_log or 'off'};",
        "    client_body_temp_path client_body_temp;",
        "    proxy_temp_path proxy_temp;",
        "    fastcgi_temp_path fastcgi_temp;",
        "    uwsgi_temp_path uwsgi_temp;",
        "    scgi_temp_path scgi_temp;",
        f"    client_max_body_size {body_limit};",
        "    large_client_header_buffers 4 128k;  # long queries reach the service, which answers with a JSON error",
        "    sendfile on;",
        "    keepalive_timeout 65;",
        "",
        "    upstream kbrelease {",
        *[f"        server {s} max_fails=1 fail_timeout=5s;" for s in servers],
        "        keepalive 32;",
        "    }",
        "",
        "    server {",
        f"        listen {listen_address(listen)};",
        "",
        "        location / {",
        *_proxy("            ", tries, retry_posts=False),
        "        }",
        "",
        "        # Image search is a POST but changes nothing: safe to retry on another replica.",
        "        location = /api/v1/search/image {",
        *_proxy("            ", tries, retry_posts=True),
        "        }",
        "",
        "        # Text search by POST (JSON body): also read-only.",
        "        location = /api/v1/search {",
        *_proxy("            ", tries, retry_posts=True),
        "        }",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"
