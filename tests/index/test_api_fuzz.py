"""Generated requests (schemathesis, from the router's OpenAPI schema) never get a 5xx."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from kbrelease.service import errors
from kbrelease.service.bundles import router

from data_workspace import SPEC, make_workspace, write_spec

app = FastAPI()
errors.install(app, logging.getLogger("kbrelease.test"))
app.include_router(router)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # the schema needs no data; the state is set below


@pytest.fixture(scope="module", autouse=True)
def workspace(tmp_path_factory: pytest.TempPathFactory) -> None:
    from kbrelease import KbRelease

    folder: Path = tmp_path_factory.mktemp("fuzz")
    cfg = make_workspace(folder)
    app.state.kb = KbRelease(cfg)
    app.state.cfg = cfg
    app.state.kb.index_bundle(write_spec(folder, SPEC))


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_api_fail(case: Any) -> None:
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = "weekly_docs"  # random names only meet the 404; aim at real data
    case.call_and_validate(checks=[schemathesis.checks.not_a_server_error])
