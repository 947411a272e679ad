"""Schemathesis against the review queue's OpenAPI operations as a logged-in analyst: no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from serving.app import create_app
from tests.support.review import PASSWORD, add_analysts, flagged_item
from tests.support.serving import Registry

FUZZ = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def review_schema(champion_v1: Registry, tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    app = create_app(champion_v1.settings(tmp_path / "state"))
    store = app.state.review_store
    # Schemathesis' ASGI client runs no lifespan: migrate and fill the store here.
    store.migrate()
    store.add_flagged([flagged_item(i) for i in range(5)])
    add_analysts(store, "ann")
    analyst = store.authenticate("ann", PASSWORD)
    assert analyst is not None
    token, _ = store.open_session(analyst, 3600)
    app.state.service.holder.check()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.token = token  # type: ignore[attr-defined]
    yield schema
    store.close()


def fuzz(
    op: schemathesis.APIOperation,
    mode: GenerationMode,
    statuses: dict[str, set[int]],
    token: str,
) -> None:
    @FUZZ
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if op.path == "/v1/review/sessions":
            response = case.call()  # logging in (or out) takes no session
        else:
            response = case.call(headers={"X-API-Key": token})
        statuses.setdefault(op.label, set()).add(response.status_code)
        if mode is GenerationMode.POSITIVE:
            case.validate_response(response)  # documented status, content type and body
        else:
            case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, response.text

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_review_api_has_no_server_errors(
    review_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    ops = [r.ok() for r in review_schema.get_all_operations()]
    ops = [op for op in ops if op.path.startswith("/v1/review")]
    assert {op.label for op in ops} >= {
        "GET /v1/review/items",
        "POST /v1/review/claims",
        "POST /v1/review/items/{review_id}/label",
        "GET /v1/review/quality",
    }
    statuses: dict[str, set[int]] = {}
    for op in ops:
        if op.label == "DELETE /v1/review/sessions":
            continue  # logging out would end the session the other operations use
        fuzz(op, mode, statuses, review_schema.token)  # type: ignore[attr-defined]
    if mode is GenerationMode.POSITIVE:
        assert 200 in statuses["GET /v1/review/items"], statuses
        assert 200 in statuses["POST /v1/review/claims"], statuses
