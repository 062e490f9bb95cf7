"""The field-level helpers the provider modules share (worker/providers/fields.py)."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

from sandbox.pdf import make_pdf
from worker.providers.base import WebhookError
from worker.providers.fields import (
    UnknownWords,
    digits,
    field_key,
    header,
    is_url,
    page_count,
    parse_multipart,
    parse_time,
    pick,
    status_word,
    text,
    whole_number,
    without_formatting,
)


# --- times --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-04-20 20:59:03", datetime(2026, 4, 20, 20, 59, 3, tzinfo=UTC)),  # UCX jobstatus
        ("2026-04-20T20:59:03", datetime(2026, 4, 20, 20, 59, 3, tzinfo=UTC)),
        ("2026-04-20 20:59", datetime(2026, 4, 20, 20, 59, tzinfo=UTC)),
        ("2024-05-06T07:08:09Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T09:08:09+02:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        (1776761122, datetime.fromtimestamp(1776761122, UTC)),  # UCX lists: a number
        ("1776761122", datetime.fromtimestamp(1776761122, UTC)),
        (" 1776761122.5 ", datetime.fromtimestamp(1776761122.5, UTC)),
        ("1776761122000", datetime.fromtimestamp(1776761122, UTC)),  # milliseconds
        ("yesterday", None),
        ("", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_time(value: object, expected: datetime | None) -> None:
    assert parse_time(value) == expected


def test_a_time_without_a_zone_is_read_in_the_zone_given() -> None:
    eastern = timezone(timedelta(hours=-5))
    assert parse_time("2024-05-06 07:08:09", eastern) == datetime(2024, 5, 6, 12, 8, 9, tzinfo=UTC)
    assert parse_time("2024-05-06T07:08:09Z", eastern) == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


# --- numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), ("12", 12), (" 4 ", 4), ("²", None), ("-1", None), (-1, None), (True, None),
     (3.0, None), ("100000", 100_000), ("100001", None), ("", None), (None, None)],
)  # fmt: skip
def test_page_count(value: object, expected: int | None) -> None:
    assert page_count(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), ("250000", 250_000), (" 7 ", 7), ("²", None), ("9" * 5000, None), (False, None),
     ("x", None), (None, None)],
)  # fmt: skip
def test_whole_number(value: object, expected: int | None) -> None:
    assert whole_number(value) == expected


def test_digits_and_formatting() -> None:
    assert digits("John Doe <+1 555-234-1234>") == "15552341234"
    assert digits(None) == ""
    assert without_formatting(" +1 (555) 234-1234 ") == "15552341234"
    assert without_formatting("[555]\t234.1234") == "5552341234"
    assert without_formatting("0003*210") == "0003*210"  # an extension keeps its star


# --- words and names ----------------------------------------------------------------------
def test_status_words_and_field_names_ignore_spelling() -> None:
    assert status_word("  No_Answer ") == status_word("no-answer") == "no answer"
    assert status_word("Failed  -  Busy") == "failed busy"
    assert status_word(None) == ""
    assert field_key("Fax_ID") == field_key("fax-id") == field_key("FaxId") == "faxid"
    assert field_key("Caller ID.Num") == "calleridnum"


def test_pick_takes_the_first_name_with_a_value() -> None:
    fields = {"Fax_ID": "", "Message-ID": ["m-1", "m-2"], "data": {"id": 7}, "id": None}
    assert pick(fields, ("faxid", "messageid", "id")) == "m-1"
    assert pick(fields, ("data", "id")) is None  # objects and None are not values
    assert pick({"Pages": 0}, ("pages",)) == 0


def test_text_of_a_value() -> None:
    assert text("Job 5 removed") == "Job 5 removed"
    assert text(["queued", "sending"]) == "queued; sending"
    assert text({"b": 1, "a": [2]}) == '{"a": [2], "b": 1}'
    assert text(None) == ""


def test_header_names_ignore_case() -> None:
    assert header({"content-type": "a/b"}, "content-type") == "a/b"
    assert header({"Content-Type": "c/d"}, "content-type") == "c/d"
    assert header({}, "content-type") == ""


@pytest.mark.parametrize(
    "value",
    [
        "http://h/x", "HTTPS://h", " https://h.example/f.pdf?x=1 ", "http:///x", "http://",
        "http:/h", "ftp://h/x", "https://?q", "https://#f", "https://@", "h://x", "", "http",
        "mailto:x@y", "//h/x", "https//h",
    ],
)  # fmt: skip
def test_is_url_agrees_with_urlsplit(value: str) -> None:
    parts = urlsplit(value.strip())
    assert is_url(value) == (parts.scheme.lower() in ("http", "https") and bool(parts.netloc))


def test_an_unknown_word_is_logged_once_however_it_is_spelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("tests.providers.test_fields")
    words = UnknownWords(log, "someprovider")
    with caplog.at_level(logging.WARNING, logger=log.name):
        words.note("Gone_Fishing")
        words.note("gone fishing")
        words.note("GONE-FISHING")
        words.note("Asleep")
    assert [r.getMessage() for r in caplog.records] == [
        "someprovider: unknown status word 'Gone_Fishing'; treated as still in progress",
        "someprovider: unknown status word 'Asleep'; treated as still in progress",
    ]


# --- multipart/form-data ------------------------------------------------------------------
PDF = make_pdf(1)


def multipart(boundary: str, *parts: tuple[str, bytes]) -> bytes:
    """A multipart body: each part is (its header lines, its bytes)."""
    body = b""
    for headers, data in parts:
        body += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def test_parts_come_in_order_with_their_names_files_and_text() -> None:
    body = multipart(
        "XyZ",
        ('Content-Disposition: form-data; name="from"', b"5551230000"),
        (
            'Content-Disposition: form-data; name="fax"; filename="fé.pdf"\r\n'
            "Content-Type: application/pdf",
            PDF,
        ),
        ('Content-Disposition: form-data; name="blob"\r\nContent-Type: image/tiff', b"II*\x00"),
        ("Content-Disposition: form-data", b"nameless"),
    )
    parts = parse_multipart('multipart/form-data; boundary="XyZ"', body)
    assert [(p.name, p.filename, p.content_type, p.is_file) for p in parts] == [
        ("from", None, "", False),
        ("fax", "fé.pdf", "application/pdf", True),
        ("blob", None, "image/tiff", True),  # no filename, but not text: a file
        (None, None, "", False),
    ]
    assert parts[0].text() == "5551230000"
    assert parts[1].data == PDF


def test_part_text_is_read_in_its_charset_or_utf8() -> None:
    body = multipart(
        "b",
        ('Content-Disposition: form-data; name="a"\r\nContent-Type: text/plain; charset=latin-1',
         "Zoë".encode("latin-1")),
        ('Content-Disposition: form-data; name="b"\r\nContent-Type: text/plain; charset=bogus-8',
         "Zoë".encode()),
    )  # fmt: skip
    assert [p.text() for p in parse_multipart("multipart/form-data; boundary=b", body)] == [
        "Zoë",
        "Zoë",
    ]


def test_a_transfer_encoding_is_undone() -> None:
    encoded = base64.encodebytes(PDF)
    body = multipart(
        "b",
        (
            'Content-Disposition: form-data; name="pdf"; filename="f.pdf"\r\n'
            "Content-Transfer-Encoding: base64",
            encoded,
        ),
    )
    (part,) = parse_multipart("multipart/form-data; boundary=b", body)
    assert part.data == PDF


def test_a_preamble_and_a_missing_boundary_parameter_are_tolerated() -> None:
    body = multipart("b0undary", ('Content-Disposition: form-data; name="id"', b"42"))
    assert parse_multipart("multipart/form-data", body)[0].text() == "42"  # from the first line
    with_preamble = b"This is a multipart body.\r\n" + body
    assert parse_multipart("multipart/form-data; boundary=b0undary", with_preamble)[0].name == "id"
    assert parse_multipart("multipart/form-data; boundary=b", b"--b--\r\n") == []


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("multipart/form-data", b"id=1", "without a boundary"),
        ("multipart/form-data; boundary=xyz", b"no boundary here", "does not contain"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="pdf"\r\n\r\n%PDF-1.4 half',
            "closing boundary",
        ),
        ("multipart/form-data; boundary=xyz", b"--xyz\nname: x\n\nlf only\n--xyz--", "cannot be"),
        ("multipart/form-data; boundary=" + "b" * 300, b"--" + b"b" * 300, "cannot be"),
    ],
)
def test_bodies_that_are_not_multipart_are_refused(
    content_type: str, body: bytes, reason: str
) -> None:
    with pytest.raises(WebhookError, match=reason):
        parse_multipart(content_type, body)
