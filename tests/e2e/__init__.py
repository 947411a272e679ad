"""End-to-end flows across packages."""
