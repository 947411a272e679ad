"""The incident API: list, get, history, evidence, operational metrics, transitions.

Reading takes an analyst session or a key with the review scope; moving an incident takes an
analyst session (the store records that analyst; the owner or an admin may move it on).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from serving.deps import AnalystDep, ReviewCallerDep, ReviewStoreDep
from serving.limits import ISSUE_MAX
from serving.review.incident_schemas import (
    EvidenceStratum,
    IncidentEventOut,
    IncidentOut,
    IncidentPage,
    IncidentStatus,
    IssueOps,
    TransitionRequest,
)
from serving.review.store import InvalidTransition, NotIncidentOwner
from serving.schemas import ErrorBody

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

IncidentId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Incident id.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody, "description": "No such incident."},
    503: {"model": ErrorBody, "description": "The review database is unreachable."},
}


def _get(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except KeyError as exc:
        raise HTTPException(404, exc.args[0] if exc.args else "not found") from None


@router.get("", response_model=IncidentPage, responses=_ERRORS)
def list_incidents(
    store: ReviewStoreDep,
    _: ReviewCallerDep,
    status: IncidentStatus | None = None,
    issue: Annotated[str | None, Query(max_length=ISSUE_MAX, pattern=r"^[^\x00]*$")] = None,
    segment: Annotated[
        str | None,
        Query(max_length=200, pattern=r"^[^\x00]*$", description="Part of the segment key."),
    ] = None,
    kind: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> IncidentPage:
    """Incidents, newest detection first, by status, issue, segment and kind."""
    return store.list_incidents(
        status=status, issue=issue, segment=segment, kind=kind, limit=limit, offset=offset
    )


@router.get("/metrics", response_model=list[IssueOps], responses=_ERRORS)
def incident_metrics(store: ReviewStoreDep, _: ReviewCallerDep) -> list[IssueOps]:
    """Per issue type: time to detect, acknowledge and resolve (median hours), alert precision."""
    return store.incident_metrics()


@router.get("/{incident_id}", response_model=IncidentOut, responses=_ERRORS)
def get_incident(incident_id: IncidentId, store: ReviewStoreDep, _: ReviewCallerDep) -> IncidentOut:
    """One incident with its evidence, status, fix and measured effect."""
    return _get(store.get_incident, incident_id)


@router.get("/{incident_id}/history", response_model=list[IncidentEventOut], responses=_ERRORS)
def get_history(
    incident_id: IncidentId, store: ReviewStoreDep, _: ReviewCallerDep
) -> list[IncidentEventOut]:
    """The incident's append-only history: detection, updates, transitions, effect."""
    return _get(store.incident_history, incident_id)


@router.get("/{incident_id}/evidence", response_model=list[EvidenceStratum], responses=_ERRORS)
def get_evidence(
    incident_id: IncidentId, store: ReviewStoreDep, _: ReviewCallerDep
) -> list[EvidenceStratum]:
    """Confirmed share of the issue among the incident's queued items (95% Wilson)."""
    return _get(store.incident_evidence, incident_id)[0]


@router.post(
    "/{incident_id}/transitions",
    response_model=IncidentOut,
    responses={
        **_ERRORS,
        403: {"model": ErrorBody, "description": "Another analyst owns the incident."},
        409: {"model": ErrorBody, "description": "Not a valid move from its status."},
    },
)
def transition(
    incident_id: IncidentId, body: TransitionRequest, store: ReviewStoreDep, analyst: AnalystDep
) -> IncidentOut:
    """Move the incident on as the logged-in analyst (a fix with `to: mitigating`)."""
    try:
        if body.true_start is not None:
            store.get_incident(incident_id)  # 404 before anything is written
        out = store.transition(
            incident_id,
            body.to,
            actor=analyst.name,
            admin=analyst.is_admin,
            note=body.note or None,
            fix_at=body.fix_at,
            fix_description=body.fix_description or None,
        )
        if body.true_start is not None:
            store.set_true_start(incident_id, body.true_start)
            out = store.get_incident(incident_id)
        return out
    except KeyError as exc:
        raise HTTPException(404, exc.args[0]) from None
    except InvalidTransition as exc:
        raise HTTPException(409, str(exc)) from None
    except NotIncidentOwner as exc:
        raise HTTPException(403, str(exc)) from None
