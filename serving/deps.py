"""FastAPI dependencies as `Annotated` aliases: the service state, the model, API-key scopes,
and the analyst behind a review request.

The hot ones are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread
pool, which costs more than the work they do on every request. The analyst ones are plain
`def`: they look the session up in the review database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from common.settings import Settings
from serving.auth import ApiKeyAuth, AuthError, Principal, key_from_headers
from serving.metrics import ServiceMetrics
from serving.model_holder import LoadedModel, ModelHolder
from serving.review.accounts import Analyst, is_session_token
from serving.review.store import ReviewStore
from serving.spool import SpoolWriter


@dataclass
class Service:
    """Everything a request handler may need; one per app, on `app.state.service`."""

    settings: Settings
    auth: ApiKeyAuth
    holder: ModelHolder
    metrics: ServiceMetrics
    spool: SpoolWriter
    sample_rate: float = 0.0
    online: Any = None  # serving.online.OnlineService when the online path is enabled
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]

# Declared as security schemes so the OpenAPI docs show both ways to send a key.
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key (scopes: score, review, admin)."
)
_bearer = HTTPBearer(auto_error=False, description="The same API key as a Bearer token.")


def require_scope(scope: str | None):
    """A dependency that authenticates the caller and checks `scope` (None: any valid key)."""

    async def dependency(
        request: Request,
        x_api_key: Annotated[str | None, Security(_api_key_header)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    ) -> Principal:
        presented = key_from_headers(x_api_key, f"Bearer {bearer.credentials}" if bearer else None)
        return _check(request.app.state.service, presented, scope)

    return dependency


def _check(svc: Service, presented: str | None, scope: str | None) -> Principal:
    try:
        return svc.auth.check(presented, scope)
    except AuthError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        raise HTTPException(exc.status, exc.message, headers=headers) from None


def authorize(request: Request, scope: str | None) -> tuple[Service, Principal]:
    """`require_scope(scope)` as a plain call, for the hot route that skips dependency
    resolution (about 60 µs a request); its OpenAPI security is declared by the route."""
    svc: Service = request.app.state.service
    headers = request.headers
    presented = key_from_headers(headers.get("x-api-key"), headers.get("authorization"))
    return svc, _check(svc, presented, scope)


# The OpenAPI `security` of a route that calls `authorize` (the schemes' default names).
SECURITY = [{"APIKeyHeader": []}, {"HTTPBearer": []}]


ScoreKey = Annotated[Principal, Depends(require_scope("score"))]
ReviewKey = Annotated[Principal, Depends(require_scope("review"))]
AdminKey = Annotated[Principal, Depends(require_scope("admin"))]
AnyKey = Annotated[Principal, Depends(require_scope(None))]


async def get_model(request: Request) -> LoadedModel:
    """The model serving now; 503 while none is loaded."""
    return loaded_model(request.app.state.service)


def loaded_model(svc: Service) -> LoadedModel:
    """The model serving now; 503 while none is loaded."""
    model = svc.holder.current
    if model is None:
        raise HTTPException(503, "no model loaded yet; see /readyz")
    return model


CurrentModel = Annotated[LoadedModel, Depends(get_model)]


async def get_review_store(request: Request) -> ReviewStore:
    """The app's review queue store (`app.state.review_store`)."""
    return request.app.state.review_store


ReviewStoreDep = Annotated[ReviewStore, Depends(get_review_store)]


@dataclass(frozen=True)
class ReviewCaller:
    """Who calls the review API: an analyst (session token), or a service key with the
    review scope (reads only: acting on the queue needs an analyst)."""

    analyst: Analyst | None
    key_id: str | None = None


def _presented(request: Request) -> str | None:
    headers = request.headers
    return key_from_headers(headers.get("x-api-key"), headers.get("authorization"))


def review_caller(
    request: Request,
    x_api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> ReviewCaller:
    """The analyst of a session token, or a key with the review scope; else 401/403."""
    presented = key_from_headers(x_api_key, f"Bearer {bearer.credentials}" if bearer else None)
    if is_session_token(presented):
        store: ReviewStore = request.app.state.review_store
        session = store.session(presented)
        if session is None:
            raise HTTPException(
                401,
                "analyst session expired or revoked; log in again (POST /v1/review/sessions)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return ReviewCaller(analyst=session.analyst)
    principal = _check(request.app.state.service, presented, "review")
    return ReviewCaller(analyst=None, key_id=principal.key_id)


ReviewCallerDep = Annotated[ReviewCaller, Depends(review_caller)]


def current_analyst(caller: ReviewCallerDep) -> Analyst:
    """The analyst acting; 401 when the caller is a service key, not an analyst."""
    if caller.analyst is None:
        raise HTTPException(
            401,
            "claiming and labelling act as an analyst: log in with POST /v1/review/sessions "
            "and send the session token as a Bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller.analyst


AnalystDep = Annotated[Analyst, Depends(current_analyst)]
