"""Schemathesis against the OpenAPI spec, through the ASGI app with a real model: no 5xx.

Uses schemathesis' Python API (operations -> hypothesis strategies) rather than its pytest
plugin, so the app and model come from ordinary fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from serving.app import create_app
from serving.flag_writer import JsonlFlagSink
from tests.support.serving import ADMIN_KEY, Registry

FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def api_schema(champion_v1: Registry, tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    app = create_app(
        champion_v1.settings(tmp_path / "state", max_batch_size=20, max_body_bytes=64 * 1024),
        flag_sink=JsonlFlagSink(tmp_path / "flags.jsonl"),
    )
    svc = app.state.service
    # Schemathesis' ASGI client does not run the lifespan: load the model, open the spool.
    svc.holder.check()
    svc.spool.start()
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    svc.spool.close()


def _operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    ops = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in ops}
    assert {"POST /v1/score", "GET /v1/models", "POST /v1/admin/reload", "GET /metrics"} <= labels
    return ops


def _fuzz(
    op: schemathesis.APIOperation,
    mode: GenerationMode,
    statuses: dict[str, set[int]],
    headers: dict[str, str] | None,
    max_examples: int,
) -> None:
    @settings(FUZZ, max_examples=max_examples)
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=headers)
        statuses.setdefault(op.label, set()).add(response.status_code)
        if mode is GenerationMode.POSITIVE and headers:
            case.validate_response(response)  # status, content type and body match the spec
        else:
            case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, response.text

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    statuses: dict[str, set[int]] = {}
    for op in _operations(api_schema):
        if mode is GenerationMode.NEGATIVE and op.label != "POST /v1/score":
            continue  # the other operations take no input that could be made invalid
        # Authenticated, so fuzzing reaches validation and scoring rather than stopping at 401.
        _fuzz(op, mode, statuses, {"X-API-Key": ADMIN_KEY}, 25)
    if mode is GenerationMode.POSITIVE:
        # Valid snapshots were actually scored, not all rejected.
        assert 200 in statuses["POST /v1/score"], statuses
    else:
        assert statuses["POST /v1/score"] & {413, 422}, statuses


def test_anonymous_calls_are_refused(api_schema: schemathesis.BaseSchema) -> None:
    statuses: dict[str, set[int]] = {}
    for op in _operations(api_schema):
        if op.label.startswith(
            ("GET /v1/review", "POST /v1/review", "GET /console", "POST /console")
        ):
            continue  # the review queue's own tests cover its auth
        _fuzz(op, GenerationMode.POSITIVE, statuses, None, 5)
    for label, seen in statuses.items():
        if label not in ("GET /healthz", "GET /readyz"):
            assert seen == {401}, (label, seen)
