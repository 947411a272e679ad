"""Helpers shared by the tests of several packages: data builders, real registries, servers."""
