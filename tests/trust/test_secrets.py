"""Secrets never leak: URL userinfo, ``?api_key=``, tokens, keys and webhook URLs stay out of every output path.

Each test drives a real component (the FastAPI service, the ``kbrelease`` CLI in a
subprocess, a real OpenAI-compatible embedding server, a real webhook receiver,
the real renderer, ``docker compose config`` in tests/deploy) with a secret placed
where it used to leak, and asserts the secret appears nowhere in what comes out,
while the masked form (``***``) shows the message itself was there.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kbrelease.config import load_config
from kbrelease.config.secrets import SECRETS, keys_for
from kbrelease.errors import ConfigError

from embed_server import EmbedServer

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-Pw-9f3k"
USERINFO = f"kbuser:{PASSWORD}"
BASIC = base64.b64encode(USERINFO.encode()).decode()
API_KEY = "sk-live-LEAK-7d1e2c"
QUERY_KEY = "qk-LEAK-a9e0f1"
MILVUS_TOKEN = "root:Mv-tok-5b8a1c"
MILVUS_PASSWORD = "Mv-uri-pw-31c7"
ADMIN_TOKEN = "adm-LEAK-q7x1"
API_TOKEN = "api-LEAK-k3z8"
AWS_SECRET = "aws-LEAK-secret-0042"
WEBHOOK_SECRET = "whk-LEAK-c4d2"
FORBIDDEN = (PASSWORD, BASIC, API_KEY, QUERY_KEY, MILVUS_TOKEN, MILVUS_PASSWORD, ADMIN_TOKEN, API_TOKEN, AWS_SECRET, WEBHOOK_SECRET)


def assert_clean(*texts: str) -> None:
    for text in texts:
        for secret in FORBIDDEN:
            assert secret not in text, f"{secret!r} leaked into: {text[:2000]}"


class HashEmbedder:
    """A deterministic 8-d embedder behind the real embedding server (the model is not what these tests are about)."""

    dim = 8

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:32], dtype=np.float32).copy() for t in texts]
        out = np.nan_to_num(np.stack(rows), nan=1.0, posinf=1.0, neginf=-1.0)
        return (np.sign(out) * (1 + np.arange(8, dtype=np.float32))).astype(np.float32)


@pytest.fixture
def embed_server() -> Iterator[EmbedServer]:
    with EmbedServer(HashEmbedder()) as server:  # type: ignore[arg-type]
        yield server


def with_userinfo(url: str, userinfo: str = USERINFO) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{userinfo}@{rest}"


def text_project(tmp_path: Path, milvus: dict[str, str] | None = None) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "a.md").write_text("# VPN\n\nConnect to the VPN before opening the wiki.\n", encoding="utf-8")
    (corpus / "b.md").write_text("# Badges\n\nLost badges are replaced at the front desk.\n", encoding="utf-8")
    lines = [f"workspace: {tmp_path / 'ws'}", "sources:", "  - name: docs", f"    path: {corpus}", "    modality: text"]
    if milvus:
        lines += ["milvus:", f"  db_prefix: {milvus['milvus.db_prefix']}", f"  registry_db: {milvus['milvus.registry_db']}"]
    lines += ["monitor:", "  in_service: false"]
    cfg = tmp_path / "kbrelease.yaml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


def cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KBRELEASE_", "MILVUS_", "TEXT_EMBEDDING_", "AWS_", "S3_", "OPENAI_"))}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), base.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "kbrelease.cli", *args], env=base | env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def workspace_text(folder: Path) -> str:
    return "".join(p.read_text(errors="ignore") for p in folder.rglob("*") if p.is_file() and p.suffix in {".json", ".txt", ".yaml", ".jsonl", ".log", ".md"})


# --- the service -------------------------------------------------------------------


def test_url_credentials_and_keys_stay_out_of_readyz_error_bodies_and_the_service_log(
    tmp_path: Path, embed_server: EmbedServer, isolated_milvus: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 11 item 9: TEXT_EMBEDDING_BASE_URL=http://user:pass@host/v1 showed the password in /readyz, 503 bodies and the log."""
    from fastapi.testclient import TestClient

    from kbrelease.service.app import create_app

    embed_server.token = "the-right-token-0000"  # our key is wrong: the server's 401 echoes what it got (Basic <base64 user:pass>)
    env = {
        "TEXT_EMBEDDING_BASE_URL": with_userinfo(embed_server.base_url),
        "TEXT_EMBEDDING_DIM": "8",
        "TEXT_EMBEDDING_API_KEY": API_KEY,
        "MILVUS_TOKEN": MILVUS_TOKEN,
        "KBRELEASE_ADMIN_TOKEN": ADMIN_TOKEN,
        "KBRELEASE_ALERT_WEBHOOKS": f"https://hooks.example.com/services/{WEBHOOK_SECRET}",
    }
    cfg = load_config(text_project(tmp_path), env=env, overrides=isolated_milvus)
    with TestClient(create_app(cfg)) as client:
        assert client.app.state.service.wait_ready(60)  # type: ignore[attr-defined]
        ready = client.get("/readyz")
        search = client.get("/api/v1/search", params={"q": "vpn"})
        logs = client.get("/api/v1/logs", params={"level": "DEBUG"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        info = client.get("/api/v1/info")

    assert ready.status_code == 503 and search.status_code == 503 and logs.status_code == 200
    assert "HTTP 401" in ready.text and "***@127.0.0.1" in ready.text  # the reason is there, the credentials are not
    assert "***@127.0.0.1" in search.json()["error"]["message"]
    assert any("model warm-up failed" in r["event"] for r in logs.json()["records"])
    assert_clean(ready.text, search.text, logs.text, info.text, capsys.readouterr().err)


def test_a_store_error_carrying_the_milvus_token_is_masked_in_the_http_body_and_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pymilvus does not echo tokens on demand, so the route raises the message a careless driver would give."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from kbrelease.errors import StoreUnreachable
    from kbrelease.service import errors
    from kbrelease.service.logs import make_logger

    cfg = load_config(text_project(tmp_path), env={"MILVUS_TOKEN": MILVUS_TOKEN, "MILVUS_URI": f"http://root:{MILVUS_PASSWORD}@127.0.0.1:1"})
    app = FastAPI()
    logger, tail = make_logger(cfg)
    errors.install(app, logger)

    @app.get("/boom")
    def boom() -> None:
        raise StoreUnreachable(f"cannot reach Milvus at {cfg.milvus.uri} with token={MILVUS_TOKEN} (Authorization: Bearer {MILVUS_TOKEN})")

    with TestClient(app) as client:
        answer = client.get("/boom")

    assert answer.status_code == 503 and "***" in answer.json()["error"]["message"]
    assert_clean(answer.text, json.dumps(tail.tail(100)), capsys.readouterr().err)


def test_uvicorn_and_root_handlers_redact_once_the_service_starts(capsys: pytest.CaptureFixture[str]) -> None:
    import logging.config

    import uvicorn.config

    from kbrelease.service.logs import install_redaction

    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)  # what uvicorn.run does before the app starts
    install_redaction()
    try:
        raise ConnectionError(f"cannot reach http://{USERINFO}@embed:8080/v1?api_key={QUERY_KEY}")
    except ConnectionError as exc:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application", exc_info=exc)
    err = capsys.readouterr().err
    assert "Exception in ASGI application" in err and "***@embed:8080" in err
    assert_clean(err)


# --- the embedding client ----------------------------------------------------------


def test_the_embedding_client_never_repeats_url_credentials_or_what_a_server_echoes(embed_server: EmbedServer, caplog: pytest.LogCaptureFixture) -> None:
    from kbrelease.embedding.openai_http import OpenAITextEmbedder
    from kbrelease.errors import EmbeddingError

    embed_server.echo_request = True  # quotes the URL and the Authorization header it received
    embed_server.fail_next(2, 500)
    url = with_userinfo(embed_server.base_url)
    caplog.set_level(logging.WARNING)
    with OpenAITextEmbedder(url, "m", 8, api_key=API_KEY, max_retries=1, backoff_base=0) as embedder:
        with pytest.raises(EmbeddingError) as failed:
            embedder.embed_texts(["hello"])
        shown = repr(embedder)
    message = str(failed.value)
    assert "unavailable after 2 attempt(s)" in message and "***@127.0.0.1" in message
    assert_clean(message, str(failed.value.__cause__ or ""), shown, caplog.text)


def test_an_api_key_in_the_query_string_is_masked(embed_server: EmbedServer) -> None:
    from kbrelease.embedding.openai_http import OpenAITextEmbedder
    from kbrelease.errors import EmbeddingError

    with OpenAITextEmbedder(f"{embed_server.base_url}?api_key={QUERY_KEY}", "m", 8, max_retries=0) as embedder, pytest.raises(EmbeddingError) as failed:
        embedder.embed_texts(["hello"])
    assert "api_key=***" in str(failed.value)
    assert_clean(str(failed.value), repr(embedder))


def test_a_bad_embedding_url_is_refused_without_echoing_its_password() -> None:
    from kbrelease.embedding.openai_http import OpenAITextEmbedder

    with pytest.raises(ConfigError) as refused:
        OpenAITextEmbedder(f"ftp://{USERINFO}@host/v1", "m", 8)
    assert "***@host" in str(refused.value)
    assert_clean(str(refused.value))


# --- alerts ------------------------------------------------------------------------


def test_webhook_urls_never_reach_the_log_when_delivery_works_or_fails(caplog: pytest.LogCaptureFixture) -> None:
    from pydantic import SecretStr

    from kbrelease.monitor.alerts import AlertSender, Notice

    from local_http import WebhookReceiver

    caplog.set_level(logging.DEBUG)
    with WebhookReceiver() as hooks:
        url = hooks.url(f"/services/T1/B1/{WEBHOOK_SECRET}")
        sender = AlertSender([SecretStr(url)], "prod", timeout=5, attempts=1)
        ok = sender.deliver([Notice("open", "completeness/docs", "3 files missing", "2026-01-01T00:00:00Z")])
        hooks.fail_next = 1
        failed = sender.deliver([Notice("open", "sync/docs", "stale", "2026-01-01T00:00:00Z")])
    assert ok[0]["delivered"] and not failed[0]["delivered"]
    assert "HTTP Request: POST" in caplog.text  # httpx logs each request with its URL: that line is redacted
    assert_clean(caplog.text, json.dumps(ok + failed))


# --- the CLI -----------------------------------------------------------------------


def test_cli_errors_json_and_debug_tracebacks_mask_milvus_credentials(tmp_path: Path) -> None:
    cfg = text_project(tmp_path)
    env = {"MILVUS_URI": f"http://root:{MILVUS_PASSWORD}@127.0.0.1:1", "MILVUS_TOKEN": MILVUS_TOKEN}

    store = cli(["-c", str(cfg), "store", "status", "--json"], env, tmp_path)
    status = cli(["-c", str(cfg), "status"], env, tmp_path)
    debug = cli(["-c", str(cfg), "--debug", "status"], env, tmp_path)

    assert store.returncode == 0 and json.loads(store.stdout)["uri"] == "http://***@127.0.0.1:1"
    assert status.returncode == 75 and "error:" in status.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert_clean(store.stdout, store.stderr, status.stdout, status.stderr, debug.stdout, debug.stderr)


def test_publish_status_show_and_manifests_carry_no_embedding_url_credentials(
    tmp_path: Path, embed_server: EmbedServer, isolated_milvus: dict[str, str]
) -> None:
    cfg = text_project(tmp_path, isolated_milvus)
    env = {
        "MILVUS_URI": isolated_milvus["milvus.uri"],
        "MILVUS_TOKEN": MILVUS_TOKEN,
        "TEXT_EMBEDDING_BASE_URL": with_userinfo(embed_server.base_url),
        "TEXT_EMBEDDING_MODEL": "hash-8",
        "TEXT_EMBEDDING_DIM": "8",
        "TEXT_EMBEDDING_API_KEY": API_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "KBRELEASE_API_TOKEN": API_TOKEN,
    }
    runs = [cli(["-c", str(cfg), *args], env, tmp_path) for args in (["publish", "--json"], ["status", "--json"], ["show", "v1", "--json"])]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert json.loads(runs[2].stdout)["embedders"]["text"]["model"] == "hash-8"

    embed_server.echo_request = True
    embed_server.fail_next(100, 400)  # a refused request: the server quotes our URL and Basic credentials back
    (tmp_path / "corpus" / "c.md").write_text("# New\n\nA new page.\n", encoding="utf-8")
    refused = cli(["-c", str(cfg), "publish"], env, tmp_path)
    assert refused.returncode != 0 and "HTTP 400" in refused.stderr and "Basic ***" in refused.stderr and "***@127.0.0.1" in refused.stderr
    assert_clean(*(r.stdout + r.stderr for r in [*runs, refused]), workspace_text(tmp_path / "ws"))


# --- config ------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [s for s in SECRETS if s.path is not None], ids=lambda s: s.env)
def test_every_secret_of_the_table_is_refused_in_the_config_file(tmp_path: Path, secret: Any) -> None:
    *parents, leaf = secret.path.split(".")
    doc: dict[str, Any] = {leaf: "written-in-the-file-1234"}
    for key in reversed(parents):
        doc = {key: doc}
    (tmp_path / "kbrelease.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")

    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path / "kbrelease.yaml", env={})
    assert secret.env in str(refused.value) and "written-in-the-file-1234" not in str(refused.value)


def test_every_configured_secret_is_registered_and_masked_at_load(tmp_path: Path) -> None:
    from kbrelease.trust.redact import redact, redact_known

    env = {
        "MILVUS_URI": f"http://root:{MILVUS_PASSWORD}@milvus:19530",
        "MILVUS_TOKEN": MILVUS_TOKEN,
        "TEXT_EMBEDDING_BASE_URL": f"https://embed.example.com/v1?api_key={QUERY_KEY}",
        "TEXT_EMBEDDING_DIM": "8",
        "OPENAI_API_KEY": API_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "KBRELEASE_ADMIN_TOKEN": ADMIN_TOKEN,
        "KBRELEASE_API_TOKEN": API_TOKEN,
        "KBRELEASE_ALERT_WEBHOOKS": f"https://hooks.example.com/services/{WEBHOOK_SECRET}",
        "S3_ENDPOINT_URL": f"http://{USERINFO}@minio:9000",
    }
    cfg = load_config(text_project(tmp_path), env=env)

    # Bare values (no URL, no key=value around them) are masked only because they were registered.
    bare = " ".join(FORBIDDEN)
    assert_clean(redact(bare), redact_known(bare), json.dumps(cfg.redacted()), repr(cfg))
    assert cfg.redacted()["milvus"]["uri"] == "http://***@milvus:19530"


# --- rendering ---------------------------------------------------------------------

_RENDER_ENV = {"MILVUS_URI": "http://milvus.milvus:19530", "S3_PATH_TEXT": "s3://bucket/text"}


@pytest.mark.parametrize(
    ("var", "value", "key"),
    [
        ("MILVUS_URI", f"http://root:{MILVUS_PASSWORD}@milvus.milvus:19530", "milvus.uri"),
        ("TEXT_EMBEDDING_BASE_URL", f"https://embed.example.com/v1?api_key={QUERY_KEY}", "text.base_url"),
        ("TEXT_EMBEDDING_BASE_URL", f"https://{USERINFO}@embed.example.com/v1", "text.base_url"),
        ("S3_ENDPOINT_URL", f"http://{USERINFO}@minio:9000", "s3.endpoint_url"),
    ],
)
def test_render_refuses_a_url_with_credentials_and_writes_nothing(tmp_path: Path, var: str, value: str, key: str) -> None:
    env = _RENDER_ENV | {var: value, "TEXT_EMBEDDING_DIM": "8"}
    out = tmp_path / "k8s"

    result = cli(["argo", "render", "-o", str(out)], env, tmp_path)

    assert result.returncode != 0 and key in result.stderr and "Secret" in result.stderr
    assert not out.exists() or not any(out.iterdir())
    assert_clean(result.stdout, result.stderr)


def test_rendered_objects_reference_every_secret_by_name_and_carry_no_value(tmp_path: Path) -> None:
    env = _RENDER_ENV | {
        "MILVUS_TOKEN": MILVUS_TOKEN,
        "TEXT_EMBEDDING_API_KEY": API_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "KBRELEASE_ADMIN_TOKEN": ADMIN_TOKEN,
        "KBRELEASE_API_TOKEN": API_TOKEN,
        "KBRELEASE_ALERT_WEBHOOKS": f"https://hooks.example.com/services/{WEBHOOK_SECRET}",
    }
    out = tmp_path / "k8s"
    result = cli(["argo", "render", "-o", str(out), "--json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    docs = {p.name: yaml.safe_load(p.read_text()) for p in out.glob("*.yaml")}

    deployment = docs["20-search-deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in deployment["env"] if "valueFrom" in e}
    assert set(refs) == set(keys_for("service")) and "KBRELEASE_ALERT_WEBHOOKS" in refs
    assert all(r == {"name": "kbrelease-secrets", "key": k, "optional": True} for k, r in refs.items())
    assert not {e["name"] for e in deployment["env"] if "value" in e} & {s.env for s in SECRETS}
    for template in docs["10-workflow-template.yaml"]["spec"]["templates"]:
        if "container" in template:
            env_refs = {e["name"] for e in template["container"]["env"] if "valueFrom" in e}
            assert env_refs == set(keys_for("workflow")) and not any("value" in e for e in template["container"]["env"])
    config_env = docs["01-config-env.yaml"]["data"]
    assert not set(config_env) & {s.env for s in SECRETS}
    readme = (out / "README.md").read_text()
    assert all(k in readme for k in keys_for("service"))
    assert_clean(result.stdout, result.stderr, *(p.read_text() for p in out.iterdir()))


def test_the_github_workflow_references_the_ci_secrets_only(tmp_path: Path) -> None:
    from kbrelease.deploy.github import github_workflow

    cfg = load_config(text_project(tmp_path), env={"AWS_SECRET_ACCESS_KEY": AWS_SECRET})
    flow = json.dumps(github_workflow(cfg))
    for key in keys_for("ci"):
        assert f"${{{{ secrets.{key} }}}}" in flow
    assert_clean(flow)
    leaky = load_config(text_project(tmp_path / "b"), env={"S3_ENDPOINT_URL": f"http://{USERINFO}@minio:9000"})
    with pytest.raises(ConfigError) as refused:
        github_workflow(leaky)
    assert_clean(str(refused.value))


# --- what the service says about an open listener ----------------------------------


def test_the_service_warns_when_it_listens_beyond_loopback_without_an_api_token(
    tmp_path: Path, isolated_milvus: dict[str, str], embed_server: EmbedServer
) -> None:
    from fastapi.testclient import TestClient

    from kbrelease.service.app import create_app, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("search.internal")
    seen = {}
    for host, token in (("0.0.0.0", None), ("0.0.0.0", API_TOKEN), ("127.0.0.1", None)):
        env = {"KBRELEASE_SERVICE_HOST": host, "TEXT_EMBEDDING_BASE_URL": embed_server.base_url, "TEXT_EMBEDDING_DIM": "8"}
        if token:
            env["KBRELEASE_API_TOKEN"] = token
        cfg = load_config(text_project(tmp_path / f"{host}-{bool(token)}"), env=env, overrides=isolated_milvus)
        stream = io.StringIO()
        app = create_app(cfg)
        app.state.log.handlers[1].setStream(stream)
        with TestClient(app):
            time.sleep(0.05)
        seen[(host, bool(token))] = "without KBRELEASE_API_TOKEN" in stream.getvalue()
    assert seen == {("0.0.0.0", False): True, ("0.0.0.0", True): False, ("127.0.0.1", False): False}


def test_the_data_index_client_names_its_service_without_credentials(tmp_path: Path) -> None:
    from kbrelease.errors import KbReleaseError
    from kbrelease.index.client import DataIndexClient

    from servers import free_port

    url = f"http://{USERINFO}@127.0.0.1:{free_port()}/?token={QUERY_KEY}"  # nothing listens there: "cannot reach <url>"
    with DataIndexClient(url, retries=0, backoff=0) as client, pytest.raises(KbReleaseError) as failed:
        client.list_bundles()
    assert "***@127.0.0.1" in str(failed.value)
    assert_clean(str(failed.value))


# --- the redaction itself, on the forms secrets take in messages ---------------------


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("GET http://kbuser:p@ss-Zq81@host/v1 failed", "ss-Zq81", "@host/v1"),  # an unencoded '@' in the password
        ("http://kbuser:p%40ss-Zq81@host/v1", "p%40ss-Zq81", "@host/v1"),
        ("Authorization: Basic a2J1c2VyOmh1bnRlcjI=", "a2J1c2VyOmh1bnRlcjI=", "Basic ***"),
        ("Authorization: Bearer sk-abc123def456", "sk-abc123def456", "Bearer ***"),
        ("https://embed/v1/embeddings?api_key=zz-Qk19&model=m", "zz-Qk19", "model=m"),
        ("https://s3.local/b?X-Amz-Signature=abcdef0123&X-Amz-Credential=AKIA1234/x", "abcdef0123", "X-Amz-Signature=***"),
        ('{"error": {"message": "bad key", "api_key": "sk-echoed-77aa"}}', "sk-echoed-77aa", '"api_key": "***"'),
        ("X-Api-Key: hk-4711-zz", "hk-4711-zz", "X-Api-Key: ***"),
        ("client_secret='cs-88-qq' rejected", "cs-88-qq", "client_secret='***'"),
    ],
)
def test_the_redaction_masks_each_form_a_secret_takes_in_a_message(text: str, secret: str, kept: str) -> None:
    from kbrelease.trust.redact import redact

    out = redact(text)
    assert secret not in out and kept in out


@pytest.mark.parametrize(
    "text",
    [
        "basic configuration of the basics",
        '{"token_count": 5, "max_tokens": 512, "chunk_target_tokens": 160}',
        "text.tokenizer_path: /models/tok.json",
        "see http://host:80/a and mail me@example.com",
    ],
)
def test_the_redaction_leaves_ordinary_text_and_valid_json_alone(text: str) -> None:
    from kbrelease.trust.redact import redact

    assert redact(text) == text


def test_a_service_log_line_stays_valid_json_after_redaction() -> None:
    from kbrelease.trust.redact import redact

    line = json.dumps({"event": "x", "detail": json.dumps({"password": "pw-1234", "token_count": 5}), "query": 'token="tk-99" n=1'})
    parsed = json.loads(redact(line))
    assert "pw-1234" not in json.dumps(parsed) and "tk-99" not in json.dumps(parsed) and json.loads(parsed["detail"])["token_count"] == 5


def test_the_real_serve_process_keeps_url_credentials_out_of_its_log_and_readyz(
    tmp_path: Path, embed_server: EmbedServer, isolated_milvus: dict[str, str]
) -> None:
    """`kbrelease serve` under uvicorn: the JSON log, uvicorn's own lines and /readyz, as an operator sees them."""
    from service.procs import ServeProcess

    embed_server.token = "the-right-token-0000"  # our key is wrong: the 401 echoes it and the Basic credentials back
    env = {
        "MILVUS_URI": isolated_milvus["milvus.uri"],
        "MILVUS_TOKEN": MILVUS_TOKEN,
        "TEXT_EMBEDDING_BASE_URL": with_userinfo(embed_server.base_url),
        "TEXT_EMBEDDING_DIM": "8",
        "TEXT_EMBEDDING_API_KEY": API_KEY,
        "KBRELEASE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    serve = ServeProcess(text_project(tmp_path, isolated_milvus), env=env)
    serve.start(timeout=120, ready=False)
    try:
        deadline = time.monotonic() + 60
        while "HTTP 401" not in (ready := serve.get("/readyz")).text and time.monotonic() < deadline:
            time.sleep(0.2)
        search = serve.get("/api/v1/search", params={"q": "vpn"})
    finally:
        serve.stop()
    log = "\n".join(serve.output())
    assert ready.status_code == 503 and "***@127.0.0.1" in ready.text
    assert "model warm-up failed" in log and search.status_code == 503
    assert_clean(ready.text, search.text, log)


def test_an_s3_endpoint_with_credentials_fails_sync_without_printing_them(tmp_path: Path) -> None:
    env = {
        "S3_ENDPOINT_URL": f"http://{USERINFO}@127.0.0.1:1",
        "S3_PATH_TEXT": "s3://bucket/text",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE0001",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "KBRELEASE_WORKSPACE": str(tmp_path / "ws"),
    }
    result = cli(["sync"], env, tmp_path)  # botocore retries the endpoint for a while, then the source fails by name
    assert result.returncode != 0 and "s3://bucket/text" in result.stderr
    assert_clean(result.stdout, result.stderr, workspace_text(tmp_path / "ws") if (tmp_path / "ws").exists() else "")
