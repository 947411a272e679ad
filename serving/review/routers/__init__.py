"""Routers of the review queue: the JSON API (items, claims, quality) and the HTML console."""
