"""The discovery report for analysts: the incidents list and the HTML report of `surfacer discover`.

The service only reads what `write_discovery` wrote into `settings.discovery_path`; a new run
of `surfacer discover --out` that folder shows up on the next request (nothing is cached).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from common.settings import Settings
from serving.deps import ReviewCallerDep, ServiceDep
from serving.schemas import ErrorBody, JSONResponse

router = APIRouter(prefix="/v1/reports", tags=["reports"])

INCIDENTS_FILE = "incidents.json"
REPORT_FILE = "report.html"
# The report is self-contained: an inline <style> and charts as data: PNGs, and no script.
# This policy allows exactly that, so any markup that slipped through could not run or phone out.
REPORT_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Incident(BaseModel):
    """One incident of the discovery run, as in its incidents.json."""

    issue: str = Field(description="Issue type whose rate moved.")
    segment: dict[str, str] = Field(description="Dimension -> value; empty for the platform.")
    start: datetime = Field(description="Estimated start of the incident (UTC).")
    detected_at: datetime = Field(description="When the detector first alarmed (UTC).")
    severity: float = Field(description="Excess issue volume, the ranking key.")
    evidence: dict[str, Any] = Field(description="Rates, counts, p-value, root-cause tables.")


_INCIDENTS = TypeAdapter(list[Incident])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody, "description": "No discovery report has been written yet."},
}

# With an HTML response class FastAPI would document errors as text/html; they are JSON.
_ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_HTML_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": spec.get("description", "Error"), "content": _ERROR_JSON}
    for code, spec in _ERRORS.items()
}


def discovery_file(settings: Settings, name: str) -> Path:
    """`name` in the discovery folder; FileNotFoundError naming the folder when it is missing."""
    folder = settings.discovery_path
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"no discovery report in {folder} ({name} missing): run "
            f"`surfacer discover --data DIR --out {folder}` or set SURFACER_DISCOVERY_DIR"
        )
    return path


def read_report_html(settings: Settings) -> str:
    """The report.html that `surfacer discover` wrote (FileNotFoundError when there is none)."""
    return discovery_file(settings, REPORT_FILE).read_text(encoding="utf-8")


def read_incidents(settings: Settings) -> list[dict[str, Any]]:
    """incidents.json as written, checked against `Incident` (ValueError when it is not)."""
    path = discovery_file(settings, INCIDENTS_FILE)
    try:
        data = orjson.loads(path.read_bytes())
        _INCIDENTS.validate_python(data)
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"{path} is not a discovery incidents list: {exc}") from None
    return data


def _not_found(exc: FileNotFoundError) -> HTTPException:
    return HTTPException(404, str(exc))


@router.get("/incidents", response_model=list[Incident], responses=_ERRORS)
def incidents(svc: ServiceDep, _: ReviewCallerDep) -> Response:
    """Incidents of the latest discovery run, in order of detection (review scope)."""
    try:
        data = read_incidents(svc.settings)
    except FileNotFoundError as exc:
        raise _not_found(exc) from None
    except ValueError as exc:
        raise HTTPException(500, str(exc)) from None
    return JSONResponse(data)


@router.get(
    "/discovery",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The report."}, **_HTML_ERRORS},
)
def discovery_report(svc: ServiceDep, _: ReviewCallerDep) -> Response:
    """The discovery report as a self-contained HTML page (review scope)."""
    try:
        html = read_report_html(svc.settings)
    except FileNotFoundError as exc:
        raise _not_found(exc) from None
    return HTMLResponse(html, headers=REPORT_HEADERS)
