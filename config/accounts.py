"""Accounts and subscribers: what the configuration says about each provider account faxrelay
uses and each receiver of its events, checked when the settings load (``config.settings`` holds
them as ``accounts`` and ``subscribers``).
"""

from __future__ import annotations

import base64
import re
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ProviderName = Literal["primevox", "ucx", "voipnow", "voipms", "callerip"]

# Provider fields each account must (or may) set; all are strings. Secrets are marked so that
# they are held as SecretStr.
PROVIDER_FIELDS: dict[str, dict[str, bool]] = {
    # provider: {field: required}
    "primevox": {"auth": True, "container_id": True, "box_id": True},
    "ucx": {"client_id": True, "client_secret": True, "fax_id": True},
    "voipnow": {"client_id": True, "client_secret": True, "user_id": False, "extension": True},
    "voipms": {
        "api_username": True,
        "api_password": True,
        "from_number": True,
        "from_name": False,
        "station_id": False,
    },
    "callerip": {"token": True},
}
SECRET_FIELDS = frozenset({"auth", "client_secret", "api_password", "token"})
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Webhook and API tokens are the only thing between the internet and faxrelay: one shorter than
# this is refused at load (a random one: python -c "import secrets; print(secrets.token_urlsafe())").
MIN_TOKEN_CHARS = 16
TOKEN_ADVICE = (
    f"at least {MIN_TOKEN_CHARS} characters "
    '(a random one: python -c "import secrets; print(secrets.token_urlsafe())")'
)
# The event types worker/pipeline/events.py emits; defined here so that a subscriber's ``types`` are checked
# at load without importing the worker.
EVENT_TYPES = (
    "fax.received",
    "fax.archived",
    "fax.archive_at_risk",
    "fax.submitted",
    "fax.delivered",
    "fax.failed",
    "fax.cancelled",
)


def webhook_secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret, ``whsec_`` + base64.

    Bare base64 is accepted too, as the reference library does. Raises ValueError (without the
    secret in it) when the secret is anything else, rather than signing with a key nobody shares.
    """
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII character
        key = b""
    if not key:
        raise ValueError("must be whsec_ followed by base64 (a Standard Webhooks secret)")
    return key


class Account(BaseModel):
    """A named connection to one provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    provider: ProviderName
    base_url: str
    webhook_token: SecretStr | None = None
    download_hosts: tuple[str, ...] = ()
    allow_private_network: bool = False
    fallback_account: str = ""
    reconcile_interval: int = Field(default=300, ge=0)
    delete_after_archive: bool = False
    # Provider fields (validated per provider below).
    auth: SecretStr | None = None
    container_id: str | None = None
    box_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    fax_id: str | None = None
    user_id: str | None = None
    extension: str | None = None
    api_username: str | None = None
    api_password: SecretStr | None = None
    from_number: str | None = None
    from_name: str | None = None
    station_id: str | None = None
    token: SecretStr | None = None

    @field_validator("webhook_token")
    @classmethod
    def _webhook_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"webhook_token must be {TOKEN_ADVICE}")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/]+", value):
            raise ValueError("must be an http(s) URL such as https://pbx.primevox.net")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _provider_fields(self) -> Account:
        fields = PROVIDER_FIELDS[self.provider]
        for field, required in fields.items():
            if required and not _present(getattr(self, field)):
                raise ValueError(f'provider "{self.provider}" needs {field}')
        all_provider_fields = {f for spec in PROVIDER_FIELDS.values() for f in spec}
        for field in sorted(all_provider_fields - set(fields)):
            if getattr(self, field) is not None:
                raise ValueError(
                    f'{field} is not a setting of provider "{self.provider}" '
                    f"(it takes {', '.join(fields)})"
                )
        return self

    def secret(self, field: str) -> str:
        """The plain value of a provider field, secret or not ('' when unset)."""
        value = getattr(self, field)
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return "" if value is None else str(value)


class Subscriber(BaseModel):
    """A receiver of faxrelay's signed events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret: SecretStr
    types: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _usable(self) -> Subscriber:
        # Checked here: a bad URL or secret otherwise fails every delivery until retries run out,
        # and a misspelt type silently matches nothing.
        problems = []
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL:
            url = httpx.URL()
        if url.scheme not in ("http", "https") or not url.host:
            problems.append("url must be an http(s) URL with a host")
        try:
            webhook_secret_key(self.secret.get_secret_value())
        except ValueError as exc:
            problems.append(f"secret {exc}")
        unknown = [t for t in self.types if t not in EVENT_TYPES]
        if unknown:
            problems.append(
                f"unknown event type {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(EVENT_TYPES)})"
            )
        if problems:
            raise ValueError(f"subscriber {self.url!r}: " + "; ".join(problems))
        return self

    def wants(self, event_type: str) -> bool:
        return not self.types or event_type in self.types


def _present(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)
