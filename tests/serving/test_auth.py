"""API-key checks: scopes, header forms, configuration errors."""

from __future__ import annotations

import pytest

from serving.auth import ApiKeyAuth, AuthError, generate_key, key_from_headers


def test_identify_and_scopes() -> None:
    auth = ApiKeyAuth({"alpha": ["score"], "beta": ["admin", "review"]})
    assert auth.identify("alpha").scopes == frozenset({"score"})
    assert auth.identify("beta").scopes == frozenset({"admin", "review"})
    assert auth.identify("alph") is None and auth.identify("alphaa") is None
    assert auth.identify("") is None and auth.identify(None) is None
    assert auth.check("beta", "review").key_id == auth.identify("beta").key_id
    with pytest.raises(AuthError) as e:
        auth.check("alpha", "admin")
    assert e.value.status == 403
    with pytest.raises(AuthError) as e:
        auth.check("gamma", None)
    assert e.value.status == 401
    # The key id is not the key.
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
    assert generate_key() != generate_key()
