"""Structured logs for every faxrelay process (web, worker, beat, CLI).

``configure_logging(process_name)`` installs one handler on the root logger:

- JSON lines when stderr is not a terminal (a supervisor, a container, ``faxrelay up``'s pipes),
  readable text when it is; ``FAXRELAY_LOG_FORMAT`` (``auto`` | ``json`` | ``text``) overrides.
- Every line carries ``time``, ``level``, ``logger``, ``message``, ``process`` and, when known,
  ``fax_id``, ``account``, ``provider`` (set by ``worker.logctx.fax_context``) and ``task_id``
  (the Celery task being run, set from Celery's task signals in ``config/celery_app.py``).
- Secrets are redacted: the values of every secret setting (API tokens, webhook tokens, provider
  credentials, event and subscriber secrets, the AWS secret key) and anything that looks like
  ``token=…``, ``auth=…``, ``api_password=…`` or an ``Authorization`` header.

The context lives in ``contextvars`` here, in the lowest layer, so that ``worker`` (which sets the
fax context) and ``config.celery_app`` (which sets the task id) both reach it without importing
each other.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.settings import Settings

# The fax being worked on: fax_id, account, provider (any may be missing). A dict, replaced (never
# mutated in place) by whoever sets it, except through ``bind`` within a context that owns it.
FAX_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("faxrelay_fax_context", default=None)
TASK_ID: ContextVar[str | None] = ContextVar("faxrelay_task_id", default=None)

CONTEXT_FIELDS = ("fax_id", "account", "provider")
MIN_SECRET_LENGTH = 6  # shorter "secrets" would mask ordinary words; they are weak anyway
REDACTED = "[redacted]"
# The placeholder pair the embedded SeaweedFS accepts: not a secret, and a word found everywhere.
EMBEDDED_S3_SECRET = "faxrelay"  # noqa: S105

# key=value pairs in URLs, query strings and reprs; "Authorization: Bearer x" style headers.
_PAIR = re.compile(
    r"(?i)\b(token|auth|api_password|password|client_secret|secret|webhook_token|access_token)"
    r"(=|%3D)([^&\s\"',;)]+)"
)
_QUOTED_PAIR = re.compile(
    r"(?i)([\"']?(?:token|auth|api_password|password|client_secret|secret|webhook_token|"
    r"access_token|authorization)[\"']?\s*[:=]\s*[\"'])([^\"']+)([\"'])"
)
_AUTH_HEADER = re.compile(r"(?i)\b(authorization\s*[:=]\s*)(?:(basic|bearer)\s+)?([^\s\"',;]+)")
_WHSEC = re.compile(r"whsec_[A-Za-z0-9+/=]+")


class Redactor:
    """Masks known secret values and secret-looking patterns in text."""

    def __init__(self, secrets: Iterable[str] = (), *, patterns: bool = True) -> None:
        self.patterns = patterns
        values = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(values, key=len, reverse=True)
        self._known = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        if not self.patterns:
            return text
        text = _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        text = _QUOTED_PAIR.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(3)}", text)
        text = _AUTH_HEADER.sub(
            lambda m: f"{m.group(1)}{(m.group(2) + ' ') if m.group(2) else ''}{REDACTED}", text
        )
        return _WHSEC.sub("whsec_" + REDACTED, text)


def secret_values() -> list[str]:
    """Every secret the settings hold (best effort: invalid settings give none)."""
    from config.settings import ConfigError, load_settings

    values: list[str] = []
    aws = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if aws and aws != EMBEDDED_S3_SECRET:
        values.append(aws)
    try:
        settings = load_settings()
    except (ConfigError, ValueError):
        return values
    return values + settings_secrets(settings)


def settings_secrets(settings: Settings) -> list[str]:
    """The secrets ``settings`` hold: API and metrics tokens, event and subscriber secrets, and
    the accounts' webhook tokens and provider secrets."""
    from config.accounts import SECRET_FIELDS

    values = list(settings.api_token_values)
    if settings.event_secret is not None:
        values.append(settings.event_secret.get_secret_value())
    if settings.metrics_token is not None:
        values.append(settings.metrics_token.get_secret_value())
    values += [s.secret.get_secret_value() for s in settings.subscribers]
    for account in settings.accounts.values():
        if account.webhook_token is not None:
            values.append(account.webhook_token.get_secret_value())
        values += [account.secret(name) for name in SECRET_FIELDS]
    return values


def current_context() -> dict[str, str]:
    """The fax context and the Celery task id of the running code."""
    out = dict(FAX_CONTEXT.get() or {})
    task_id = TASK_ID.get()
    if task_id:
        out["task_id"] = task_id
    return out


class ContextFilter(logging.Filter):
    """Copies the context onto each record (``record.fax_id`` …) and redacts its message."""

    def __init__(self, process_name: str, redactor: Redactor) -> None:
        super().__init__()
        self.process_name = process_name
        self.redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_context()
        for name in (*CONTEXT_FIELDS, "task_id"):
            if getattr(record, name, None) is None and name in context:
                setattr(record, name, context[name])
        record.faxrelay_process = self.process_name
        return True


class _Base(logging.Formatter):
    def __init__(self, process_name: str, redactor: Redactor) -> None:
        super().__init__()
        self.process_name = process_name
        self.redact = redactor

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        at = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "time": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
            "process": getattr(record, "faxrelay_process", self.process_name),
        }
        context = current_context()
        for name in (*CONTEXT_FIELDS, "task_id"):
            value = getattr(record, name, None) or context.get(name)
            if value:
                out[name] = str(value)
        if record.exc_info:
            out["exception"] = self.redact(
                "".join(traceback.format_exception(*record.exc_info)).rstrip()
            )
        elif record.exc_text:
            out["exception"] = self.redact(record.exc_text)
        if record.stack_info:
            out["stack"] = self.redact(record.stack_info)
        return out


class JsonFormatter(_Base):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), ensure_ascii=False, default=str)


class TextFormatter(_Base):
    """``2025-01-01T10:00:00.123Z INFO  worker.pipeline.inbound [fax_id=… account=…] message``."""

    def format(self, record: logging.LogRecord) -> str:
        data = self.fields(record)
        context = " ".join(
            f"{name}={data[name]}" for name in (*CONTEXT_FIELDS, "task_id") if name in data
        )
        line = f"{data['time']} {data['level']:<7} {data['logger']}"
        if context:
            line += f" [{context}]"
        line += f" {data['message']}"
        for extra in ("exception", "stack"):
            if extra in data:
                line += "\n" + data[extra]
        return line


_HANDLER_MARK = "_faxrelay_handler"


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def use_json(stream: Any = None) -> bool:
    """JSON unless the stream is a terminal; ``FAXRELAY_LOG_FORMAT`` overrides."""
    from config.settings import ConfigError, load_settings

    try:
        choice = load_settings().log_format
    except (ConfigError, ValueError):
        choice = "auto"
    if choice != "auto":
        return choice == "json"
    stream = stream if stream is not None else sys.stderr
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


def make_handler(
    process_name: str,
    *,
    stream: Any = None,
    json_lines: bool | None = None,
    secrets: Iterable[str] | None = None,
) -> logging.Handler:
    """A stream handler with faxrelay's formatter, context and redaction."""
    redactor = Redactor(secret_values() if secrets is None else secrets)
    as_json = use_json(stream) if json_lines is None else json_lines
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    formatter = JsonFormatter if as_json else TextFormatter
    handler.setFormatter(formatter(process_name, redactor))
    handler.addFilter(ContextFilter(process_name, redactor))
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure_logging(
    process_name: str,
    *,
    level: int | str | None = None,
    stream: Any = None,
    json_lines: bool | None = None,
    loggers: Iterable[logging.Logger] = (),
) -> logging.Handler:
    """Install faxrelay's handler on the root logger (and on ``loggers`` that do not propagate),
    replacing any handler a previous call or a framework put there. Idempotent."""
    handler = make_handler(process_name, stream=stream, json_lines=json_lines)
    targets = [logging.getLogger(), *loggers]
    for logger in targets:
        for old in list(logger.handlers):
            # Ours from an earlier call, and plain stderr handlers a framework added (Celery,
            # uvicorn); subclasses such as pytest's capture handlers stay.
            if getattr(old, _HANDLER_MARK, False) or type(old) is logging.StreamHandler:
                logger.removeHandler(old)
        logger.addHandler(handler)
    root = logging.getLogger()
    if level is not None:
        root.setLevel(level)
    elif root.level == logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    # Uvicorn's loggers go through the root instead of their own handlers; one it silenced
    # (``--no-access-log`` leaves uvicorn.access without handlers, not propagating) stays silent.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        if named.handlers:
            named.handlers = []
            named.propagate = True
    # httpx logs every request URL at INFO; the URL may carry credentials (redacted) and the
    # volume drowns the rest. Warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return handler
