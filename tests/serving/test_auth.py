"""API-key checks: scopes, header forms, configuration errors, generated dev keys."""

from __future__ import annotations

import pytest

from common.settings import Settings
from serving.auth import SCOPES, ApiKeyAuth, AuthError, generate_key, key_from_headers
from serving.cli import ensure_api_keys


def test_identify_and_scopes() -> None:
    auth = ApiKeyAuth({"alpha": ["score"], "beta": ["admin", "review"]})
    assert auth.identify("alpha").scopes == frozenset({"score"})
    assert auth.identify("beta").scopes == frozenset({"admin", "review"})
    assert auth.identify("alph") is None and auth.identify("alphaa") is None
    assert auth.identify("") is None and auth.identify(None) is None
    assert auth.check("beta", "review").scopes == frozenset({"admin", "review"})
    assert auth.check("beta", None).scopes == frozenset({"admin", "review"})
    with pytest.raises(AuthError) as e:
        auth.check("alpha", "admin")
    assert e.value.status == 403
    with pytest.raises(AuthError) as e:
        auth.check("gamma", None)
    assert e.value.status == 401
    # The key id names a key in logs without revealing it, the same in every worker.
    again = ApiKeyAuth({"beta": ["admin"], "alpha": ["score"]})
    assert again.identify("alpha").key_id == auth.identify("alpha").key_id
    assert auth.identify("alpha").key_id != auth.identify("beta").key_id
    assert "alpha" not in auth.identify("alpha").key_id


def test_header_forms() -> None:
    assert key_from_headers("k1", "Bearer k2") == "k1"
    assert key_from_headers(None, "Bearer k2") == "k2"
    assert key_from_headers(None, "bearer   k2 ") == "k2"
    assert key_from_headers(None, "Basic k2") is None
    assert key_from_headers(None, "Bearer ") is None


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="unknown scope"):
        ApiKeyAuth({"k": ["score", "root"]})
    with pytest.raises(ValueError, match="empty API key"):
        ApiKeyAuth({"": ["score"]})
    assert not ApiKeyAuth({}).configured


def test_a_dev_key_works_next_to_the_configured_ones() -> None:
    settings, key = ensure_api_keys(Settings(api_keys={"ops-key": ["admin"]}), dev_key=True)
    assert key is not None and key.startswith("sk_") and len(key) > 40
    auth = ApiKeyAuth(settings.api_keys)
    for scope in SCOPES:
        assert auth.check(key, scope)
    assert auth.check("ops-key", "admin")
    with pytest.raises(AuthError):
        auth.check("ops-key", "score")
    # Two servers started with --dev-key do not share a key.
    other = ApiKeyAuth({generate_key(): list(SCOPES)})
    assert other.identify(key) is None
    with pytest.raises(ValueError, match="no API keys configured"):
        ensure_api_keys(Settings(api_keys={}), dev_key=False)
