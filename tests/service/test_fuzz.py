"""Fuzz the published OpenAPI spec with schemathesis: valid and invalid inputs, never a 5xx.

Bounded: a few dozen examples per operation and mode, so the module runs in about a minute.
(Schemathesis's pytest fixture loader does not run on pytest 9, so each operation's
strategy is driven by Hypothesis here directly.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from .conftest import ADMIN_TOKEN, make_client, wait_ready

pytestmark = pytest.mark.slow
EXAMPLES = 25


@pytest.fixture(scope="module")
def api_schema(published: Any) -> Iterator[Any]:
    with make_client(published) as client:  # runs the app's lifespan: models warm, live release resolved
        wait_ready(client)
        yield schemathesis.openapi.from_asgi("/api/v1/openapi.json", client.app)


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def test_the_spec_covers_the_api(api_schema: Any) -> None:
    labels = {op.label for op in operations(api_schema)}
    assert {"GET /api/v1/search", "POST /api/v1/search", "POST /api/v1/search/image", "GET /api/v1/releases/{name}"} <= labels
    assert len(labels) >= 14


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_input_makes_the_service_fail(api_schema: Any, mode: GenerationMode) -> None:
    seen: dict[int, int] = {}
    for operation in operations(api_schema):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def call(case: Any) -> None:
            # With the admin token the fuzzer also gets past the auth check of switch, rollback and logs.
            response = case.call(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            case.validate_response(response, checks=[not_a_server_error])
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis: header -> list of values
            if 400 <= response.status_code < 500 and content_type.startswith("application/json"):
                assert response.json()["error"]["message"]  # every error is the one JSON shape

        try:
            call()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation with no parameters has no invalid input
    assert all(status < 500 for status in seen), seen
    assert sum(seen.values()) > 100
