"""Is it a PDF, and how many pages: the check every received fax passes before it is archived."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import IO

from celery.exceptions import SoftTimeLimitExceeded
from pypdf import PdfReader

logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed input is reported by us, once


@dataclass(frozen=True)
class PdfCheck:
    ok: bool
    pages: int | None
    problem: str = ""


def check_pdf(stream: IO[bytes]) -> PdfCheck:
    """Header, then a parse that counts pages. Leaves the stream at its start."""
    stream.seek(0)
    head = stream.read(1024)
    stream.seek(0)
    if b"%PDF-" not in head:
        kind = "an HTML page" if b"<html" in head.lower() else "not a PDF"
        return PdfCheck(False, None, f"the file is {kind} (no %PDF- header)")
    try:
        pages = len(PdfReader(stream, strict=False).pages)
    except SoftTimeLimitExceeded:
        raise  # the task's time ran out mid-parse: no verdict on the file (the step retries)
    except Exception as exc:  # pypdf raises many kinds on malformed input; any means unreadable
        return PdfCheck(False, None, f"the PDF cannot be parsed: {type(exc).__name__}: {exc}")
    finally:
        stream.seek(0)
    if pages == 0:
        return PdfCheck(False, 0, "the PDF has no pages")
    return PdfCheck(True, pages)
