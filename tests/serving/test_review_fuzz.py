"""Schemathesis against the review queue's OpenAPI operations with a review key: no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from serving.app import create_app
from tests.support.review import flagged_item
from tests.support.serving import REVIEW_KEY, Registry

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
    app.state.service.holder.check()
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    store.close()


def fuzz(
    op: schemathesis.APIOperation, mode: GenerationMode, statuses: dict[str, set[int]]
) -> None:
    @FUZZ
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers={"X-API-Key": REVIEW_KEY})
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
        fuzz(op, mode, statuses)
    if mode is GenerationMode.POSITIVE:
        assert 200 in statuses["GET /v1/review/items"], statuses
        assert 200 in statuses["POST /v1/review/claims"], statuses
