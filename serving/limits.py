"""Field limits of what the review store holds, in one place for the API models and the schema.

The SQLAlchemy columns (`serving.review.models`) are sized from these constants, and the
request models use the `Annotated` types below, so anything the API accepts fits the store:
oversized or NUL-carrying values get a 422 naming the field, never a 500 from the database
(PostgreSQL text cannot hold NUL at all).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from features.contract import ITEM_ID_MAX  # one limit for online ingest and the API

ISSUE_MAX = 100
ANALYST_NAME_MAX = 200
NOTE_MAX = 2000
MODEL_VERSION_MAX = 64
ANCHOR_MAX = 40
LEASE_MAX = 64
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
# An analyst session token as issued (`as_` + 43 URL-safe characters), with room to spare.
SESSION_TOKEN_MAX = 128

NUL = "\x00"


def no_nul(value: str) -> str:
    """`value` unchanged; ValueError when it holds a NUL character (the store cannot)."""
    if NUL in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


def _text(max_length: int, min_length: int = 1) -> object:
    return StringConstraints(min_length=min_length, max_length=max_length)


# The same rules as JSON Schema patterns, so /openapi.json tells clients (and schema-driven
# fuzzers) what `no_nul` and whitespace stripping refuse; the validators give the messages.
NO_NUL_SCHEMA = Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
NOT_BLANK_SCHEMA = Field(json_schema_extra={"pattern": "^[^\\u0000]*[^\\u0000\\s][^\\u0000]*$"})


ItemId = Annotated[str, _text(ITEM_ID_MAX), AfterValidator(no_nul), NO_NUL_SCHEMA]
IssueName = Annotated[str, _text(ISSUE_MAX), AfterValidator(no_nul), NO_NUL_SCHEMA]
AnalystName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=ANALYST_NAME_MAX),
    AfterValidator(no_nul),
    NOT_BLANK_SCHEMA,
]
Note = Annotated[str, _text(NOTE_MAX, min_length=0), AfterValidator(no_nul), NO_NUL_SCHEMA]
ModelVersion = Annotated[str, _text(MODEL_VERSION_MAX), AfterValidator(no_nul), NO_NUL_SCHEMA]
Anchor = Annotated[str, _text(ANCHOR_MAX, min_length=0), AfterValidator(no_nul), NO_NUL_SCHEMA]
Lease = Annotated[str, _text(LEASE_MAX), AfterValidator(no_nul), NO_NUL_SCHEMA]
Password = Annotated[
    str, _text(PASSWORD_MAX, min_length=PASSWORD_MIN), AfterValidator(no_nul), NO_NUL_SCHEMA
]
