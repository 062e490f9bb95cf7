"""Settings: the one place that reads the environment and the config file.

Sources, strongest first: ``FAXRELAY_*`` environment variables, then the TOML file named by
``FAXRELAY_CONFIG`` (top-level keys are the setting names in lower case), then defaults.

Secrets are ``SecretStr``: they print as ``**********`` in reprs, logs and errors.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from config.accounts import (
    ACCOUNT_NAME,
    MIN_TOKEN_CHARS,
    TOKEN_ADVICE,
    Account,
    Subscriber,
    webhook_secret_key,
)

# An API token's name in FAXRELAY_API_TOKENS (``name:token``).
TOKEN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def sentinel_address(address: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host in brackets: ``[::1]:26379``) as (host, port); ValueError
    naming the address when it is not one."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]/@]+):(\d{1,5})", address)
    port = int((match[2] or match[4]) if match else 0)
    if match is None or not 0 < port < 65536:
        raise ValueError(f"sentinel address {address!r} is not host:port (e.g. sentinel-1:26379)")
    return (match[1] or match[3]), port


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and what is expected."""


class _TomlSource(PydanticBaseSettingsSource):
    """The TOML file named by FAXRELAY_CONFIG (read once per Settings())."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("FAXRELAY_CONFIG", "")
        self.data: dict[str, Any] = {}
        if path:
            try:
                with open(path, "rb") as handle:
                    self.data = tomllib.load(handle)
            except FileNotFoundError as exc:
                raise ConfigError(f"FAXRELAY_CONFIG names {path}, which does not exist") from exc
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
            except OSError as exc:
                raise ConfigError(f"{path} cannot be read: {exc}") from exc

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


class Settings(BaseSettings):
    """Every setting faxrelay reads. See README "Configuration"."""

    model_config = SettingsConfigDict(env_prefix="FAXRELAY_", extra="forbid", frozen=True)

    redis_url: str = ""
    # Redis Sentinel instead of a URL (config.connect): the sentinels as host:port, the
    # name they monitor the primary under, and the password of the data nodes and sentinels.
    redis_sentinels: tuple[str, ...] = ()
    redis_sentinel_master: str = ""
    redis_password: SecretStr | None = None
    # Every acknowledgement (webhook 200, API 202) waits until this many replicas have the write
    # (WAIT), for at most redis_wait_timeout seconds; else the answer is 503.
    redis_min_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout: float = Field(default=1.0, gt=0)
    s3_bucket: str = "faxrelay"
    s3_endpoint_url: str = ""
    s3_prefix: str = ""
    s3_region: str = "us-east-1"
    # "auto": path-style URLs (endpoint/bucket/key) for a custom endpoint, virtual-hosted
    # (bucket.endpoint/key) for AWS, which is deprecating path style.
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Archive controls, applied to every object faxrelay writes (worker.io.archive.Controls).
    s3_sse: Literal["", "AES256", "aws:kms"] = ""
    s3_sse_kms_key_id: str = ""  # with aws:kms; empty: the server's default key (AWS: aws/s3)
    s3_object_lock_mode: Literal["", "GOVERNANCE", "COMPLIANCE"] = ""
    s3_object_lock_days: int = Field(default=0, ge=0)
    # The hops whose X-Forwarded-For / X-Forwarded-Proto are believed (webhooks.proxy): IP
    # addresses or networks, "*" for any; empty: none. Default: a proxy on the same host.
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    metrics_token: SecretStr | None = None  # when set, /metrics needs it as a bearer token
    state_dir: Path = Path(".faxrelay")
    log_format: Literal["auto", "json", "text"] = "auto"  # auto: JSON unless stderr is a TTY
    otel: bool = False  # OpenTelemetry tracing (config.tracing; the OTEL_* variables set it up)
    api_tokens: tuple[SecretStr, ...] = ()
    dashboard_secret: SecretStr | None = None  # signs dashboard sessions (default: from tokens)
    webhook_max_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    webhook_log_days: float = Field(default=14.0, gt=0)
    webhook_log_body_bytes: int = Field(default=64 * 1024, ge=0)
    # The raw webhook log's caps (worker.store.keys): overall, per account (requests that carried
    # its token), and per refused bucket (a wrong or missing token, each account; unknown accounts)
    webhook_log_max_entries: int = Field(default=200_000, gt=0)
    webhook_log_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    webhook_log_account_entries: int = Field(default=100_000, gt=0)
    webhook_log_account_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    webhook_log_refused_entries: int = Field(default=1000, gt=0)
    webhook_log_refused_bytes: int = Field(default=1024 * 1024, gt=0)
    # Refused requests logged a minute, per account and per client address; the rest: not logged
    webhook_refusals_per_minute: int = Field(default=60, ge=0)
    record_retention_days: float = Field(default=30.0, gt=0)
    # Tests and benchmarks only: the retention in seconds, instead of record_retention_days; and
    # the inbound dedup window in seconds, instead of each provider's (see README "Retention")
    record_retention_seconds: float | None = Field(default=None, gt=0)
    dedup_window_seconds: float | None = Field(default=None, gt=0)
    event_secret: SecretStr | None = None
    callback_hosts: tuple[str, ...] = ()
    document_hosts: tuple[str, ...] = ()
    download_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    document_max_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    archive_risk_margin: float = Field(default=72 * 3600.0, ge=0)
    sweep_interval: float = Field(default=2.0, gt=0)
    retry_scale: float = Field(default=1.0, gt=0)  # multiplies every retry delay (tests: small)
    reconcile_lookback_days: float = Field(default=30.0, gt=0)
    lease_seconds: float = Field(default=15.0, gt=0)  # renewed every third while a step runs
    wake_grace: float = Field(default=30.0, gt=0)
    presign_expiry: int = Field(default=24 * 3600, gt=0)
    send_deadline: float = Field(default=24 * 3600.0, gt=0)
    redial_count: int = Field(default=2, ge=0)
    redial_delay: float = Field(default=300.0, ge=0)
    idempotency_ttl: int = Field(default=48 * 3600, ge=24 * 3600)
    accounts: dict[str, Account] = {}
    subscribers: tuple[Subscriber, ...] = ()

    @field_validator(
        "api_tokens", "callback_hosts", "document_hosts", "redis_sentinels", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            sentinel_address(address)  # raises ValueError naming the bad address
        return value

    @field_validator("redis_password")
    @classmethod
    def _redis_password(cls, value: SecretStr | None) -> SecretStr | None:
        # compose files pass an unset variable as ""
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _redis_source(self) -> Settings:
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError(
                "redis_sentinel_master: required with redis_sentinels "
                "(the name the sentinels monitor the primary under)"
            )
        if self.redis_sentinel_master and not self.redis_sentinels:
            raise ValueError("redis_sentinels: required with redis_sentinel_master (host:port,...)")
        if self.redis_sentinels and self.redis_url:
            raise ValueError("set redis_url or redis_sentinels, not both")
        return self

    @property
    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(sentinel_address(address) for address in self.redis_sentinels)

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _forwarded_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # comma-separated; "" trusts no hop
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _forwarded_allow_ips(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # uvicorn would take a typo as a literal host name that never matches: refuse it here.
        for entry in value:
            if entry != "*":
                try:  # as uvicorn reads them: a network must not have host bits set
                    ipaddress.ip_network(entry) if "/" in entry else ipaddress.ip_address(entry)
                except ValueError:
                    raise ValueError(
                        f"{entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24, *)"
                    ) from None
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _archive_controls(self) -> Settings:
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("s3_sse_kms_key_id: needs s3_sse = aws:kms")
        if self.s3_object_lock_mode and not self.s3_object_lock_days:
            raise ValueError("s3_object_lock_days: required with s3_object_lock_mode (days kept)")
        if self.s3_object_lock_days and not self.s3_object_lock_mode:
            raise ValueError(
                "s3_object_lock_mode: required with s3_object_lock_days (GOVERNANCE or COMPLIANCE)"
            )
        return self

    @field_validator("event_secret")
    @classmethod
    def _event_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None  # compose.yaml passes an unset FAXRELAY_EVENT_SECRET as ""
        webhook_secret_key(value.get_secret_value())
        return value

    @field_validator("accounts", mode="before")
    @classmethod
    def _account_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            named = {}
            for name, spec in value.items():
                if not ACCOUNT_NAME.fullmatch(name):
                    raise ValueError(
                        f"account name {name!r} may hold only letters, digits, - and _"
                    )
                named[name] = {**spec, "name": name} if isinstance(spec, dict) else spec
            return named
        return value

    @model_validator(mode="after")
    def _fallbacks(self) -> Settings:
        for name, account in self.accounts.items():
            fallback = account.fallback_account
            if fallback and fallback not in self.accounts:
                raise ValueError(
                    f"accounts.{name}: fallback_account {fallback!r} is not an account"
                )
            if fallback == name:
                raise ValueError(f"accounts.{name}: fallback_account cannot be the account itself")
        return self

    @model_validator(mode="after")
    def _token_names(self) -> Settings:
        names = [name for name, _ in self.api_token_names]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # the audit log would not tell them apart
            raise ValueError(f"api_tokens: the name(s) {', '.join(twice)} are used twice")
        short = [name for name, token in self.api_token_names if len(token) < MIN_TOKEN_CHARS]
        if short:
            raise ValueError(f"api_tokens: {', '.join(short)} must be {TOKEN_ADVICE}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _PlainEnvSource(settings_cls), _TomlSource(settings_cls))

    def account(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            raise ConfigError(f"no account named {name!r}") from None

    @property
    def api_token_names(self) -> tuple[tuple[str, str], ...]:
        """(name, token) of each API token: ``name:token`` names one (the name is what the log
        says acted); a bare token is ``token-1``, ``token-2``… by its place in the list."""
        named = []
        for place, secret in enumerate(self.api_tokens, start=1):
            value = secret.get_secret_value()
            name, sep, token = value.partition(":")
            if sep and token and TOKEN_NAME.fullmatch(name):
                named.append((name, token))
            else:
                named.append((f"token-{place}", value))
        return tuple(named)

    @property
    def retention_seconds(self) -> float:
        """How long a final record stays in Redis (``record_retention_days``)."""
        if self.record_retention_seconds is not None:
            return self.record_retention_seconds
        return self.record_retention_days * 86400.0

    @property
    def api_token_values(self) -> tuple[str, ...]:
        return tuple(token for _, token in self.api_token_names)


class _PlainEnvSource(PydanticBaseSettingsSource):
    """FAXRELAY_* variables as plain strings; comma lists are split by the field validators.

    pydantic-settings would parse list-typed variables as JSON; the contract says comma-separated.
    """

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return os.environ.get(f"FAXRELAY_{field_name.upper()}"), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name in self.settings_cls.model_fields:
            if field_name in ("accounts", "subscribers"):
                continue  # structured: TOML only
            raw = os.environ.get(f"FAXRELAY_{field_name.upper()}")
            if raw is not None:
                values[field_name] = raw
        return values


def describe_error(error: ValidationError) -> str:
    """One line per problem, naming the key the way the TOML spells it."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return "\n".join(lines)


def load_settings() -> Settings:
    """Read settings now; raise ConfigError with a readable message when they are wrong."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
