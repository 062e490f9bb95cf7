"""The ``/v1`` contract as pydantic models: the one definition of every request and answer.

The web app validates requests with them and generates ``GET /v1/openapi.json`` from them; the
``faxrelay.send_fax`` Celery task validates its keyword arguments with ``QueuedSend``; the CLI and
the Python client (``faxrelay_client.client``) build and read the same models. This module imports
nothing of faxrelay's own (only pydantic), so the server's packages depend on it and not the other
way round, and a caller can use the client beside its own ``config`` or ``worker`` packages.

Coercions are those ``POST /v1/faxes`` always had: numbers given for text fields become text
(``"to": 15552345678``), an empty or null ``callback_url`` / ``metadata`` means none, and an empty
``account``, ``to`` or ``document`` counts as missing. Unknown fields are ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

Direction = Literal["inbound", "outbound"]
State = Literal[
    "received", "fetching", "archived",
    "queued", "submitted", "sending", "delivered", "cancelled", "accepted", "unknown",
    "failed",
]  # fmt: skip
FINAL_STATES = frozenset({"archived", "delivered", "failed", "cancelled", "accepted"})
IDEMPOTENCY_KEY_MAX = 255


def _required(value: Any) -> Any:
    """An empty value counts as a missing one (``not body.get(k)`` in the API since v1)."""
    if value is None or value == "" or value == {}:
        raise PydanticCustomError("missing", "Field required")
    return value


def _one_of(schema: dict[str, Any]) -> None:
    """The document's schema: one field given, as text (no null default to show)."""
    for prop in schema["properties"].values():
        prop.pop("default", None)
    schema["oneOf"] = [{"required": [name]} for name in ("base64", "s3_key", "url")]


class Document(BaseModel):
    """The PDF to send: exactly one of ``base64`` (the bytes), ``s3_key`` (an object in
    faxrelay's bucket) or ``url`` (https, from a host in ``FAXRELAY_DOCUMENT_HOSTS``)."""

    model_config = ConfigDict(
        coerce_numbers_to_str=True, json_schema_extra=lambda schema: _one_of(schema)
    )

    # Null is accepted as "not given", but the schema shows only text: one field is given.
    base64: str | SkipJsonSchema[None] = None
    s3_key: str | SkipJsonSchema[None] = None
    url: str | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Document:
        given = [name for name in ("base64", "s3_key", "url") if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "one_of",
                "needs exactly one of base64, s3_key or url (got {given})",
                {"given": ", ".join(given) or "none"},
            )
        return self


class SendFields(BaseModel):
    """What every form of a send carries besides the document."""

    model_config = ConfigDict(coerce_numbers_to_str=True, extra="ignore")

    account: str = Field(description="The account to send through.")
    to: str = Field(
        description="Destination number; +, spaces, dashes and brackets allowed. The account's "
        "provider module normalises it, or the send is refused with the reason."
    )
    callback_url: str = Field("", description="Where this fax's signed events go.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Any JSON object, kept with the record."
    )

    required_fields = field_validator("account", "to", mode="before")(_required)

    @field_validator("callback_url", mode="before")
    @classmethod
    def _no_callback(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("metadata", mode="before")
    @classmethod
    def _no_metadata(cls, value: Any) -> Any:
        return {} if value is None or value == "" or value == [] else value


class SendFax(SendFields):
    """``POST /v1/faxes`` as JSON."""

    document: Document

    required_document = field_validator("document", mode="before")(_required)


class SendFaxUpload(BaseModel):
    """``POST /v1/faxes`` as ``multipart/form-data`` (described for the schema; the fields are
    validated as ``SendFields``)."""

    account: str
    to: str
    callback_url: str = ""
    metadata: str = Field("", description="A JSON object, as text.")
    document: bytes = Field(description="The PDF, as a file part.")


class QueuedSend(SendFax):
    """The keyword arguments of the ``faxrelay.send_fax`` Celery task."""

    idempotency_key: str = Field("", max_length=IDEMPOTENCY_KEY_MAX)

    @field_validator("idempotency_key", mode="before")
    @classmethod
    def _no_key(cls, value: Any) -> Any:
        return "" if value is None else value


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    state: str
    at: str
    note: str = ""


class Fax(BaseModel):
    """A fax record as the API, the events and the archive show it (README "Records")."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    direction: Direction
    account: str
    provider: str
    state: State
    reason: str = ""
    reason_detail: str = ""
    from_number: str = Field("", alias="from")
    to_number: str = Field("", alias="to")
    pages: int | None = None
    sha256: str = ""
    provider_ids: dict[str, str] = Field(default_factory=dict)
    raw: dict[str, Any] = Field(default_factory=dict)
    archive: dict[str, str] = Field(default_factory=dict)
    document_key: str = ""
    created_at: str
    updated_at: str
    expires_at: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    attempts: dict[str, int] = Field(default_factory=dict)
    callback_url: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class FaxPage(BaseModel):
    """``GET /v1/faxes``: newest first; ``next_cursor`` asks for the next page."""

    items: list[Fax]
    next_cursor: str | None = None


class ListFaxes(BaseModel):
    """The query of ``GET /v1/faxes`` (an empty parameter is the same as none)."""

    model_config = ConfigDict(extra="ignore")

    direction: Direction | None = None
    account: str | None = None
    state: State | None = None
    idempotency_key: str | None = Field(
        None, description="The send made with this Idempotency-Key (per account)."
    )
    limit: int = Field(50, description="Page size; values outside 1..500 are clamped.")
    cursor: str | None = None

    @field_validator("direction", "account", "state", "idempotency_key", "cursor", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("limit", mode="after")
    @classmethod
    def _clamp(cls, value: int) -> int:
        return min(max(value, 1), 500)


class ErrorBody(BaseModel):
    code: str = Field(description="A stable, short code such as missing_field or not_found.")
    message: str = Field(description="What is wrong, in words; names the field when one is.")


class Error(BaseModel):
    """Every refusal: ``{"error": {"code", "message"}}``."""

    error: ErrorBody


# --- operator endpoints -------------------------------------------------------------------------


class WebhookLogEntry(BaseModel):
    """One request to a provider webhook route, as the raw webhook log keeps it (secrets
    redacted). ``body`` is the kept body as text (undecodable bytes replaced), ``body_b64`` the
    same bytes exactly."""

    model_config = ConfigDict(extra="allow")

    id: str
    at: float = Field(description="Arrival, epoch seconds.")
    account: str
    route: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body_size: int
    truncated: bool = Field(description="The kept body is incomplete; it cannot be replayed.")
    status: int
    outcome: str
    detail: str = ""
    fax_id: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)
    body: str = ""
    body_b64: str = ""


class WebhookLogPage(BaseModel):
    items: list[WebhookLogEntry]


class ListWebhooks(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(20, description="Entries to return; values outside 1..500 are clamped.")
    account: str | None = None

    @field_validator("account", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("limit", mode="after")
    @classmethod
    def _clamp(cls, value: int) -> int:
        return min(max(value, 1), 500)


class Replay(BaseModel):
    """What the webhook route answered to the replayed request."""

    status: int
    about: dict[str, str] = Field(
        default_factory=dict, description="The answer's Faxrelay-* headers, without the prefix."
    )
    body: str = ""


class StartBackfill(BaseModel):
    """``POST /v1/backfills``: archive what the account's provider holds from a time range."""

    model_config = ConfigDict(extra="ignore")

    account: str
    since: datetime = Field(description="ISO 8601; UTC unless it names a zone.")
    until: datetime | None = None
    wake: bool = Field(False, description="Only queue the new faxes; report no archive results.")

    required_account = field_validator("account", mode="before")(_required)

    @model_validator(mode="after")
    def _range(self) -> StartBackfill:
        if self.until is not None and self.until <= self.since:
            raise PydanticCustomError("range", "until must be after since")
        return self


class Backfill(BaseModel):
    """A backfill's progress. ``state``: ``listing`` (asking the provider), ``running`` (its
    faxes are recorded and being archived by the workers), ``done`` (every fax is archived,
    failed, or has had its first try and waits for a retry: ``pending``), ``failed`` (``error``
    says why). Kept for a week."""

    id: str
    account: str
    since: str
    until: str | None = None
    wake: bool = False
    state: Literal["listing", "running", "done", "failed"]
    error: str = ""
    total: int = Field(0, description="Faxes the provider listed in the range.")
    settled: int = Field(0, description="Of them: archived, failed, or tried once.")
    archived: int = 0
    already: int = Field(0, description="Archived before this backfill.")
    queued: int = Field(0, description="With wake: new faxes left to the workers.")
    pending: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""


class CheckAccounts(BaseModel):
    """``POST /v1/accounts/check``: one account, or every one."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    account: str | None = None


class AccountCheck(BaseModel):
    account: str
    provider: str
    ok: bool
    details: str = Field(description="The provider's answer in short (secrets redacted).")
    answer: dict[str, Any] = Field(
        default_factory=dict, description="The provider's full answer (secrets redacted)."
    )


class AccountChecks(BaseModel):
    items: list[AccountCheck]


# --- refusals -------------------------------------------------------------------------------------

# The code a refusal of a field carries (the codes POST /v1/faxes always answered with).
FIELD_CODES = {
    "document": "bad_document",
    "metadata": "bad_metadata",
    "callback_url": "bad_callback",
    "idempotency_key": "bad_idempotency_key",
    "limit": "bad_limit",
}
_FRIENDLY = {
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "string_type": "must be text",
}


def describe(error: ValidationError) -> ErrorBody:
    """A validation failure as the API's error: missing fields first (``missing_field``,
    "missing: account, to"), else the first wrong field (its code, "document.base64: …")."""
    problems = error.errors(include_url=False)
    missing = [".".join(map(str, p["loc"])) for p in problems if p["type"] == "missing"]
    if missing:
        return ErrorBody(code="missing_field", message=f"missing: {', '.join(missing)}")
    lines, first = [], ""
    for problem in problems:
        where = ".".join(str(part) for part in problem["loc"] if not _is_union_tag(part))
        first = first or where
        said = _FRIENDLY.get(problem["type"], problem["msg"])
        lines.append(f"{where}: {said}" if where else said)
    top = first.split(".", 1)[0]
    return ErrorBody(code=FIELD_CODES.get(top, "bad_field"), message="; ".join(lines))


def _is_union_tag(part: Any) -> bool:
    """pydantic puts a union member's type in the location ("function-after[...]", "str")."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "none"))
