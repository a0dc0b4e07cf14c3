"""Bearer-token dependencies, reusable by every router.

* :data:`ReadAccess` — read endpoints. Open unless ``KBRELEASE_API_TOKEN`` is
  set; then the API token (or the admin token) is required.
* :data:`AdminAccess` — switch, rollback, logs. Needs ``KBRELEASE_ADMIN_TOKEN``;
  with none configured these endpoints are disabled (403).

A missing token is 401 (with ``WWW-Authenticate: Bearer``), a wrong one 403.
Tokens are compared in constant time and never logged. The checks are
``async`` on purpose: a sync dependency would cost every request a hop
through the thread pool.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from kbrelease.service.errors import ApiError

_bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <token>`: KBRELEASE_API_TOKEN for reads (when set), KBRELEASE_ADMIN_TOKEN for admin.",
)


def _matches(given: str, *expected: SecretStr | None) -> bool:
    ok = False
    for secret in expected:
        if secret is not None:
            ok |= hmac.compare_digest(given.encode(), secret.get_secret_value().encode())
    return ok


def _missing(what: str) -> ApiError:
    return ApiError(401, "unauthorized", f"this endpoint needs `Authorization: Bearer <token>` ({what})", headers={"WWW-Authenticate": "Bearer"})


async def require_read(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    service = request.app.state.cfg.service
    if service.api_token is None:
        return
    if creds is None:
        raise _missing("the token in KBRELEASE_API_TOKEN")
    if not _matches(creds.credentials, service.api_token, service.admin_token):
        raise ApiError(403, "forbidden", "the bearer token is not valid for this service; use the token in KBRELEASE_API_TOKEN")


async def require_admin(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    service = request.app.state.cfg.service
    if service.admin_token is None:
        raise ApiError(403, "admin_disabled", "admin endpoints are disabled: start the service with KBRELEASE_ADMIN_TOKEN set to enable them")
    if creds is None:
        raise _missing("the admin token in KBRELEASE_ADMIN_TOKEN")
    if not _matches(creds.credentials, service.admin_token):
        raise ApiError(403, "forbidden", "the bearer token is not the admin token; use the token in KBRELEASE_ADMIN_TOKEN")


ReadAccess = Depends(require_read)
AdminAccess = Depends(require_admin)
