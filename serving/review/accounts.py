"""Analyst accounts and sessions: who is labelling, authenticated, not typed.

Passwords are stored as Argon2id hashes (argon2-cffi). A login opens a server-side session:
the caller gets a random token (`as_...`, sent as the console cookie or as a Bearer token to
the review API) and the database keeps only its SHA-256, with an expiry and a CSRF token.
Logout revokes the row, so a copied token stops working too.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from serving.limits import ANALYST_NAME_MAX, PASSWORD_MAX, PASSWORD_MIN, no_nul
from serving.review.db import now as _now
from serving.review.db import utc
from serving.review.models import Analyst as AnalystRow
from serving.review.models import AnalystSession as SessionRow

SESSION_PREFIX = "as_"
_hasher: Any = None


def _password_hasher() -> Any:
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher

        _hasher = PasswordHasher()
    return _hasher


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def is_session_token(value: str | None) -> bool:
    """Whether a presented credential looks like an analyst session token (not an API key)."""
    return bool(value) and str(value).startswith(SESSION_PREFIX)


@dataclass(frozen=True)
class Analyst:
    """An authenticated analyst."""

    id: int
    name: str
    is_admin: bool


@dataclass(frozen=True)
class AnalystSession:
    """A live session: its analyst, CSRF token and end."""

    analyst: Analyst
    csrf: str
    expires_at: datetime


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > ANALYST_NAME_MAX:
        raise ValueError(
            f"analyst name must be 1 to {ANALYST_NAME_MAX} characters, got {len(name)}"
        )
    return no_nul(name)


def check_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValueError(
            f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters, got {len(password)}"
        )
    return no_nul(password)


class AccountsMixin:
    """The analyst and session operations of `ReviewStore`."""

    _tx: Any

    def add_analyst(
        self, name: str, password: str, *, admin: bool = False, replace: bool = False
    ) -> Analyst:
        """Create an analyst (ValueError if the name exists, unless `replace`: then set the
        password and admin flag, re-enable the account and end its sessions)."""
        name, password = check_name(name), check_password(password)
        digest = _password_hasher().hash(password)
        at = _now()
        with self._tx() as s:
            row = s.scalars(select(AnalystRow).where(AnalystRow.name == name)).first()
            if row is not None and not replace:
                raise ValueError(f"analyst {name!r} already exists (use --reset to change it)")
            if row is None:
                row = AnalystRow(name=name, password_hash=digest, is_admin=admin, created_at=at)
                s.add(row)
            else:
                row.password_hash, row.is_admin, row.disabled_at = digest, admin, None
                s.execute(
                    update(SessionRow)
                    .where(SessionRow.analyst_id == row.id, SessionRow.revoked_at.is_(None))
                    .values(revoked_at=at)
                )
            s.flush()
            return Analyst(row.id, row.name, row.is_admin)

    def disable_analyst(self, name: str) -> None:
        """Lock an analyst out and end their sessions (KeyError if unknown)."""
        at = _now()
        with self._tx() as s:
            row = s.scalars(select(AnalystRow).where(AnalystRow.name == name)).first()
            if row is None:
                raise KeyError(f"no analyst named {name!r}")
            row.disabled_at = at
            s.execute(
                update(SessionRow)
                .where(SessionRow.analyst_id == row.id, SessionRow.revoked_at.is_(None))
                .values(revoked_at=at)
            )

    def analysts(self) -> list[tuple[Analyst, bool]]:
        """Every analyst and whether the account is enabled."""
        with self._tx() as s:
            rows = s.scalars(select(AnalystRow).order_by(AnalystRow.name)).all()
            return [(Analyst(r.id, r.name, r.is_admin), r.disabled_at is None) for r in rows]

    def authenticate(self, name: str, password: str) -> Analyst | None:
        """The analyst if the name and password match an enabled account, else None."""
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = _password_hasher()
        with self._tx() as s:
            row = s.scalars(select(AnalystRow).where(AnalystRow.name == name.strip())).first()
            stored = row.password_hash if row is not None else None
        try:
            if stored is None:
                # Hash anyway: an unknown name takes as long as a wrong password.
                hasher.hash(password or "-")
                return None
            hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row.disabled_at is not None:
            return None
        return Analyst(row.id, row.name, row.is_admin)

    def open_session(self, analyst: Analyst, ttl_s: float) -> tuple[str, AnalystSession]:
        """A new session of `analyst` lasting `ttl_s` seconds: its token and the session."""
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        at = _now()
        expires = at + timedelta(seconds=ttl_s)
        csrf = secrets.token_urlsafe(24)
        with self._tx() as s:
            s.add(
                SessionRow(
                    token_hash=token_hash(token),
                    analyst_id=analyst.id,
                    csrf=csrf,
                    created_at=at,
                    expires_at=expires,
                )
            )
        return token, AnalystSession(analyst, csrf, expires)

    def session(self, token: str | None) -> AnalystSession | None:
        """The live session of `token` (not expired, not revoked, analyst enabled), or None."""
        if not is_session_token(token):
            return None
        assert token is not None
        at = _now()
        with self._tx() as s:
            got = s.execute(
                select(SessionRow, AnalystRow)
                .join(AnalystRow, AnalystRow.id == SessionRow.analyst_id)
                .where(SessionRow.token_hash == token_hash(token))
            ).first()
        if got is None:
            return None
        sess, row = got
        expires = utc(sess.expires_at)
        if sess.revoked_at is not None or row.disabled_at is not None or expires is None:
            return None
        if expires <= at:
            return None
        return AnalystSession(Analyst(row.id, row.name, row.is_admin), sess.csrf, expires)

    def revoke_session(self, token: str | None) -> bool:
        """End a session (logout); False if there was no live one."""
        if not is_session_token(token):
            return False
        assert token is not None
        with self._tx() as s:
            done = s.execute(
                update(SessionRow)
                .where(SessionRow.token_hash == token_hash(token), SessionRow.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
        return bool(done.rowcount)
