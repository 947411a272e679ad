"""API-key authentication with scopes (score, review, admin, ingest).

Keys come from `settings.api_keys` (key -> scopes). A presented key is hashed and compared
against every configured key's hash with `hmac.compare_digest`, without early exit, so the
time taken says nothing about which key (or how much of one) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SCOPES = ("score", "review", "admin", "ingest")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a non-secret key id (hash prefix) and the key's scopes."""

    key_id: str
    scopes: frozenset[str]


class AuthError(Exception):
    """Raised by `ApiKeyAuth.check`; `status` is 401 (no/bad key) or 403 (missing scope)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeyAuth:
    """Validates keys in constant time per configured key and checks scopes."""

    def __init__(self, api_keys: Mapping[str, Sequence[str]]) -> None:
        entries: list[tuple[bytes, Principal]] = []
        for key, scopes in api_keys.items():
            if not key:
                raise ValueError("empty API key in settings.api_keys")
            unknown = set(scopes) - set(SCOPES)
            if unknown:
                raise ValueError(
                    f"unknown scope(s) {sorted(unknown)} for an API key; expected some of {SCOPES}"
                )
            d = _digest(key)
            entries.append((d, Principal(key_id=d.hex()[:8], scopes=frozenset(scopes))))
        self._entries = entries

    @property
    def configured(self) -> bool:
        return bool(self._entries)

    def identify(self, presented: str | None) -> Principal | None:
        """The principal for `presented`, or None; compares against every key (no early exit)."""
        if not presented:
            return None
        d = _digest(presented)
        found: Principal | None = None
        for stored, principal in self._entries:
            if hmac.compare_digest(stored, d):
                found = principal
        return found

    def check(self, presented: str | None, scope: str | None) -> Principal:
        """The principal if `presented` is valid and has `scope` (None: any scope)."""
        principal = self.identify(presented)
        if principal is None:
            raise AuthError(401, "missing or invalid API key (send X-API-Key or Bearer token)")
        if scope is not None and scope not in principal.scopes:
            raise AuthError(403, f"API key lacks the {scope!r} scope")
        return principal


def key_from_headers(x_api_key: str | None, authorization: str | None) -> str | None:
    """The presented key: `X-API-Key`, else an `Authorization: Bearer <key>` token."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def generate_key() -> str:
    """A fresh random API key (URL-safe, 256 bits)."""
    return "sk_" + secrets.token_urlsafe(32)
