"""Reading what providers send: the one version of each field-level helper the provider modules
share.

A provider module knows its provider's field names, status words and error strings (DESIGN
principle 5); this module knows none of them. It holds the generic steps every module needs, so
that five modules do not carry five slightly different copies: loose field-name matching, page
counts, times, status words, phone-number formatting, and multipart/form-data bodies (taken apart
by python-multipart, never by hand).

The PrimeVox inbound webhook runs through ``FieldRoles``, ``page_count``, ``parse_time``,
``flatten``, ``is_url`` and ``id_text`` on every request (the ingest hot path that
``bench/ingest`` measures): those are written for speed, and ``field_key`` is cached.

Size: one concept, the provider-independent field helpers; splitting them would put back the
copies this module replaced.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import quopri
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from worker.providers.base import WebhookError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks


# --- headers ---------------------------------------------------------------------------------
def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, its name matched without regard to case ('' when absent).

    ``name`` is given in lower case, as the intake passes headers; other spellings cost a scan.
    """
    value = headers.get(name)
    if value is not None:
        return value
    for key, found in headers.items():
        if key.lower() == name:
            return found
    return ""


# --- status words ------------------------------------------------------------------------------
def status_word(value: object) -> str:
    """A status word as the status tables spell it: lower case, ``_`` and ``-`` read as spaces,
    one space between words (``"No_Answer"`` → ``"no answer"``)."""
    return " ".join(str(value or "").lower().replace("_", " ").replace("-", " ").split())


class UnknownWords:
    """The status words a provider sent that its table lacks, each logged once per process.

    A provider that invents a word says it on every poll of every fax: one warning is enough for
    an operator to add it to the table. The fax itself reads ``JobState.UNKNOWN`` (in progress).
    """

    def __init__(self, log: logging.Logger, provider: str) -> None:
        self._log = log
        self._provider = provider
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def note(self, word: str) -> None:
        """Log ``word`` unless a word that reads the same was logged already."""
        key = status_word(word)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        self._log.warning(
            "%s: unknown status word %r; treated as still in progress", self._provider, word
        )


# --- field names ------------------------------------------------------------------------------
_NOT_KEY = re.compile(r"[^a-z0-9]")


@functools.lru_cache(maxsize=1024)  # a handful of names, seen on every webhook
def field_key(name: str) -> str:
    """A field name as the name lists spell it: lower case, letters and digits only
    (``"Fax_ID"``, ``"fax-id"`` and ``"FaxId"`` are all ``"faxid"``)."""
    return _NOT_KEY.sub("", name.lower())


def keyed(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The values by ``field_key`` of their names; of several spellings the first wins."""
    by_key: dict[str, Any] = {}
    for name, value in items:
        by_key.setdefault(field_key(str(name)), value)
    return by_key


def scalar(value: Any) -> Any:
    """A list's first item (a repeated form field); None for an object, an empty or nested list."""
    if isinstance(value, list):
        value = value[0] if value else None
    return None if isinstance(value, (dict, list)) else value


def pick_keyed(by_key: Mapping[str, Any], names: Iterable[str]) -> Any:
    """The first value among ``names`` (keys, best first) that is neither missing nor ''."""
    for name in names:
        value = scalar(by_key.get(name))
        if value is not None and value != "":
            return value
    return None


def pick(fields: Mapping[str, Any], names: Iterable[str]) -> Any:
    """``pick_keyed`` over fields by their names as sent."""
    return pick_keyed(keyed(fields.items()), names)


def flatten(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level fields, then those of nested objects (``{"data": {...}}``) not already present."""
    if dict not in map(type, fields.values()):
        return dict(fields)  # nothing nested (form bodies never are)
    flat: dict[str, Any] = dict(fields)
    for value in fields.values():
        if isinstance(value, dict):
            for name, inner in value.items():
                flat.setdefault(str(name), inner)
    return flat


class _Plan(NamedTuple):
    steps: list[tuple[str, Any, tuple[str, ...]]]  # (role, accept check, fields best first)
    roles: tuple[str, ...]  # the roles some field can give
    firsts: tuple[str, ...]  # for each of those roles, its best field
    checks: tuple[tuple[int, Any], ...]  # (index in roles, accept check) for checked roles


_all_text = {str}.issuperset  # all(type(v) is str …) in one C call


class FieldRoles:
    """Picks every role's value (fax id, caller …) from a webhook's fields.

    The same as ``pick(fields, names)`` for each role's list of names, planned once per set of
    field names (a provider sends the same names every time): the plan lists, for each role, the
    fields that can give its value, best first. A role with an ``accept`` check (a download URL:
    an http(s) URL) takes the first value that passes it instead of the first non-blank one.
    """

    MAX_PLANS = 256  # the field names are the caller's: keep the cache bounded

    def __init__(
        self,
        roles: Mapping[str, Iterable[str]],
        accept: Mapping[str, Callable[[Any], bool]] | None = None,
    ) -> None:
        self.roles = {role: tuple(names) for role, names in roles.items()}
        self.accept = dict(accept or {})
        self.plans: dict[tuple[str, ...], _Plan] = {}

    def _plan(self, names: tuple[str, ...]) -> _Plan:
        field_of: dict[str, str] = {}  # normalised key → the field that has it
        for name in names:
            field_of.setdefault(field_key(str(name)), name)  # the first of several spellings wins
        steps = []
        for role, wanted in self.roles.items():
            fields = tuple(field_of[key] for key in wanted if key in field_of)
            if fields:
                steps.append((role, self.accept.get(role), fields))
        plan = _Plan(
            steps,
            tuple(role for role, _, _ in steps),
            tuple(fields[0] for _, _, fields in steps),
            tuple((i, accept) for i, (_, accept, _) in enumerate(steps) if accept is not None),
        )
        if len(self.plans) < self.MAX_PLANS:
            self.plans[names] = plan
        return plan

    def pick(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        names = tuple(fields)
        plan = self.plans.get(names) or self._plan(names)
        # The usual webhook: every role's best field holds text, none blank, each passing its
        # check. Then that is the answer, found in a few C calls instead of a loop per role.
        values = list(map(fields.__getitem__, plan.firsts))
        if (
            _all_text(map(type, values))
            and "" not in values
            and all(accept(values[i]) for i, accept in plan.checks)
        ):
            return dict(zip(plan.roles, values, strict=True))
        picked: dict[str, Any] = {}
        for role, accept, candidates in plan.steps:
            for name in candidates:
                value = fields[name]
                if value.__class__ is not str:  # a repeated name's values, JSON's other types
                    value = scalar(value)
                    if value is None:
                        continue
                if value != "" if accept is None else accept(value):
                    picked[role] = value
                    break
        return picked


# --- values -----------------------------------------------------------------------------------
def is_url(value: Any) -> bool:
    """An http(s) URL with a host (what ``urlsplit`` would say, without parsing the rest)."""
    if not isinstance(value, str):
        return False
    scheme, sep, rest = value.strip().partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and rest[:1] not in ("", "/", "?", "#")


def id_text(value: Any) -> str:
    """An id as text: JSON may give a number (``79.0`` is ``"79"``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def text(value: Any) -> str:
    """A value as words for a message or a detail: text as it is, a list line by line (``"; "``),
    anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(text(item) for item in value)
    return json.dumps(value, sort_keys=True)


MAX_PAGE_COUNT = 100_000  # a page count beyond this is not one (and would not fit in a record)


def page_count(value: Any) -> int | None:
    """A page count: an int or ASCII digits (``isdigit`` alone also takes ``²``), in range."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        digits = value.strip()
        value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 9 else None
    return value if isinstance(value, int) and 0 <= value <= MAX_PAGE_COUNT else None


def whole_number(value: Any) -> int | None:
    """A count with no natural bound (records stored, dial attempts): an int or ASCII digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    digits = "" if value is None else str(value).strip()
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 18 else None


_NOT_DIGIT = re.compile(r"[^0-9]")


def digits(value: object) -> str:
    """Only the ASCII digits of a value (``"John <555-234-1234>"`` → ``"5552341234"``)."""
    return _NOT_DIGIT.sub("", str(value or ""))


_FORMATTING = re.compile(r"[\s\-.()\[\]+]")


def without_formatting(number: str) -> str:
    """A phone number without what people write into it: ``+``, spaces, dashes, dots, brackets."""
    return _FORMATTING.sub("", number or "")


EPOCH = re.compile(r"\d{9,13}(\.\d+)?")  # seconds or milliseconds since 1970


def parse_time(value: Any, zone: tzinfo = UTC) -> datetime | None:
    """A provider's time, None when it is not one.

    Epoch seconds or milliseconds (a number, or 9 to 13 digits), or ISO 8601 in any of its
    spellings (``2024-05-06 07:08:09``, ``2024-05-06T07:08:09Z``); a time without a zone is read
    in ``zone``.
    """
    if value is None or value.__class__ is bool:
        return None
    written = str(value).strip()
    if EPOCH.fullmatch(written):
        seconds = float(written)
        if seconds > 1e11:  # milliseconds
            seconds /= 1000
        return datetime.fromtimestamp(seconds, tz=UTC)
    try:
        parsed = datetime.fromisoformat(written.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


# --- multipart/form-data ----------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body."""

    name: str | None  # None: the part names no field
    filename: str | None  # None: not sent as a file
    content_type: str  # media type, lower case; '' when the part gives none
    charset: str
    data: bytes  # Content-Transfer-Encoding (base64, quoted-printable) already undone

    @property
    def is_file(self) -> bool:
        """A file: it has a filename, or a content type that is not text."""
        return self.filename is not None or (
            bool(self.content_type) and not self.content_type.startswith("text/")
        )

    def text(self) -> str:
        """The part's text in its charset (UTF-8 when it names none, or one Python lacks)."""
        try:
            return self.data.decode(self.charset or "utf-8", errors="replace")
        except LookupError:
            return self.data.decode("utf-8", errors="replace")


def _options(value: bytes) -> tuple[str, dict[str, str]]:
    """A header's value and parameters; header bytes are UTF-8 in practice (filenames)."""
    # Latin-1 maps bytes to str one to one, so parse_options_header hands the bytes back intact.
    main, params = parse_options_header(value.decode("latin-1"))
    return main.decode("latin-1"), {
        key.decode("latin-1"): found.decode("utf-8", errors="replace")
        for key, found in params.items()
    }


def _undo_transfer_encoding(encoding: bytes, data: bytes) -> bytes:
    """RFC 7578 deprecates Content-Transfer-Encoding, but old senders still use it."""
    try:
        if encoding == b"base64":
            return base64.b64decode(data)
        if encoding == b"quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        pass
    return data


class _Collector:
    """python-multipart's callbacks, gathering each part's headers and bytes."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.ended = False
        self._headers: dict[str, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._data = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_part_data": lambda data, start, end: self._data.extend(data[start:end]),
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._headers = {}
        self._data = bytearray()

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _part_end(self) -> None:
        _, disposition = _options(self._headers.get("content-disposition", b""))
        media, params = _options(self._headers.get("content-type", b""))
        encoding = self._headers.get("content-transfer-encoding", b"").strip().lower()
        self.parts.append(
            Part(
                name=disposition.get("name"),
                filename=disposition.get("filename"),
                content_type=media.strip(),
                charset=params.get("charset", "").strip().lower(),
                data=_undo_transfer_encoding(encoding, bytes(self._data)),
            )
        )

    def _end(self) -> None:
        self.ended = True


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart/form-data body, in order; python-multipart does the parsing.

    The boundary comes from ``content_type``, else from the body's first line (a sender that
    forgot the header). A preamble before the first boundary is skipped (RFC 2046). WebhookError
    when the body is not multipart: no boundary, a boundary the body does not contain, no closing
    boundary (cut short), or anything else python-multipart refuses.
    """
    _, params = _options(content_type.encode("latin-1", errors="replace"))
    boundary = params.get("boundary", "").encode("latin-1", errors="replace")
    if not boundary:
        first = body.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
        if not first.startswith(b"--") or len(first) < 3:
            raise WebhookError("multipart body without a boundary")
        boundary = first[2:]
    start = body.find(b"--" + boundary)
    if start < 0:
        raise WebhookError("multipart body does not contain its boundary")
    collector = _Collector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body[start:])
        parser.finalize()
    except FormParserError as exc:
        raise WebhookError(f"multipart body cannot be read: {exc}") from exc
    if not collector.ended:
        raise WebhookError("multipart body ends without its closing boundary (truncated?)")
    return collector.parts
