"""Bearer tokens (401 without, 403 wrong), the log tail, and secrets never in logs or answers."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import ADMIN_TOKEN, API_TOKEN, make_client, wait_ready
from .test_api import error_of

MILVUS_SECRET = "mlv-Zt8q-secret-token"
TEXT_KEY = "sk-text-Ux2m-secret-key"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def locked(published: Any) -> Any:
    """An app with both tokens set: reads need the API token, admin the admin token."""
    with make_client(published, admin=ADMIN_TOKEN, api=API_TOKEN) as c:
        wait_ready(c)
        yield c


def test_admin_endpoints_need_the_admin_token(client: Any) -> None:
    assert error_of(client.post("/api/v1/releases/v1/switch"), 401)["code"] == "unauthorized"
    assert client.post("/api/v1/rollback").headers["www-authenticate"] == "Bearer"
    assert error_of(client.post("/api/v1/rollback", headers=bearer("not-the-token")), 403)["code"] == "forbidden"
    assert error_of(client.get("/api/v1/logs"), 401)
    assert error_of(client.get("/api/v1/logs", headers=bearer("nope")), 403)
    assert error_of(client.get("/api/v1/logs", headers={"Authorization": f"Basic {ADMIN_TOKEN}"}), 401)
    switched = client.post("/api/v1/releases/v1/switch", headers=bearer(ADMIN_TOKEN))
    assert switched.status_code == 200 and switched.json()["live"] == "v1"
    assert "no previous live release" in error_of(client.post("/api/v1/rollback", headers=bearer(ADMIN_TOKEN)), 409)["message"]
    assert error_of(client.post("/api/v1/releases/v9/switch", headers=bearer(ADMIN_TOKEN)), 404)["code"] == "unknown_release"


def test_without_an_admin_token_admin_endpoints_are_disabled(published: Any) -> None:
    with make_client(published, admin=None) as c:
        err = error_of(c.post("/api/v1/releases/v1/switch", headers=bearer("anything")), 403)
        assert err["code"] == "admin_disabled" and "KBRELEASE_ADMIN_TOKEN" in err["message"]
        assert error_of(c.get("/api/v1/logs"), 403)["code"] == "admin_disabled"


def test_with_an_api_token_reads_need_it_and_probes_stay_open(locked: Any) -> None:
    reads = ["/api/v1/search?q=vpn", "/api/v1/releases", "/api/v1/releases/v1", "/api/v1/live", "/api/v1/info", "/api/v1/thumbnails/v1/pictures/deadbeef"]
    for path in reads:
        assert error_of(locked.get(path), 401)["code"] == "unauthorized", path
        assert error_of(locked.get(path, headers=bearer("wrong")), 403)["code"] == "forbidden", path
    assert locked.get("/api/v1/search?q=vpn", headers=bearer(API_TOKEN)).status_code == 200
    assert locked.get("/api/v1/releases", headers=bearer(ADMIN_TOKEN)).status_code == 200  # the admin token reads too
    assert error_of(locked.get("/api/v1/logs", headers=bearer(API_TOKEN)), 403)  # but the API token is not admin
    for path in ["/healthz", "/readyz", "/metrics", "/", "/static/app.js", "/api/v1/openapi.json"]:
        assert locked.get(path).status_code == 200, path


def test_log_tail_is_structured_and_filterable(client: Any) -> None:
    client.get("/api/v1/search", params={"q": "gym partnership discount"})
    client.get("/api/v1/search", params={"q": "vpn", "release": "v404"})
    records = client.get("/api/v1/logs", headers=bearer(ADMIN_TOKEN), params={"limit": 50}).json()["records"]
    search = [r for r in records if r.get("path") == "/api/v1/search"]
    assert search[-2]["status"] == 200 and search[-2]["release"] == "v1" and search[-2]["ms"] > 0 and search[-2]["request_id"]
    assert search[-1]["status"] == 404 and search[-1]["level"] == "WARNING" and search[-1]["error"] == "unknown_release"
    warnings = client.get("/api/v1/logs", headers=bearer(ADMIN_TOKEN), params={"level": "WARNING"}).json()["records"]
    assert warnings and all(r["level"] in ("WARNING", "ERROR", "CRITICAL") for r in warnings)
    found = client.get("/api/v1/logs", headers=bearer(ADMIN_TOKEN), params={"contains": "v404"}).json()["records"]
    assert len(found) == 1 and found[0]["status"] == 404
    assert len(client.get("/api/v1/logs", headers=bearer(ADMIN_TOKEN), params={"limit": 1}).json()["records"]) == 1


def test_secrets_never_reach_the_log_or_an_answer(published: Any, capfd: pytest.CaptureFixture[str]) -> None:
    from pydantic import SecretStr

    def with_secrets(cfg: Any) -> None:
        # Real values of every kind of secret the service knows (the app's cfg only: the Lite server needs none).
        cfg.milvus.token = SecretStr(MILVUS_SECRET)
        cfg.text_api_key = SecretStr(TEXT_KEY)

    with make_client(published, admin=ADMIN_TOKEN, api=API_TOKEN, edit=with_secrets) as c:
        wait_ready(c)
        answers = [
            c.get("/api/v1/search", params={"q": f"my token is {ADMIN_TOKEN} and {API_TOKEN}"}, headers=bearer(API_TOKEN)),
            c.get("/api/v1/search", params={"q": f"{MILVUS_SECRET}+/?", "release": "v404"}, headers=bearer(API_TOKEN)),
            c.get("/api/v1/search", params={"q": TEXT_KEY}, headers=bearer(ADMIN_TOKEN)),
            c.get("/api/v1/releases", headers=bearer(ADMIN_TOKEN + "x")),
            c.get("/api/v1/info", headers=bearer(API_TOKEN)),
            c.post("/api/v1/rollback", headers=bearer(ADMIN_TOKEN)),
            c.get("/api/v1/search", headers={"Authorization": f"Bearer {API_TOKEN}", "X-Api-Token": ADMIN_TOKEN}, params={"q": "x" * 3000}),
            c.get("/api/v1/releases/v1", headers=bearer(API_TOKEN)),
        ]
        c.app.state.log.info("a library message naming %s", TEXT_KEY)  # whatever puts a secret into a message
        tail = c.get("/api/v1/logs", headers=bearer(ADMIN_TOKEN), params={"limit": 1000})
        metrics = c.get("/metrics").text
    log_text = tail.text + capfd.readouterr().err
    assert "/api/v1/search" in log_text and "***" in log_text  # the queries were logged, scrubbed
    for secret in (ADMIN_TOKEN, API_TOKEN, MILVUS_SECRET, TEXT_KEY):
        assert secret not in log_text and secret not in metrics
        for resp in answers[3:]:  # answers never repeat a secret back (errors, manifests, info)
            assert secret not in resp.text
