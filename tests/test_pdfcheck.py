"""The PDF check: a file pypdf cannot read, whatever it raises, is "not a PDF we can read"."""

from __future__ import annotations

import io

import pytest

from sandbox.pdf import make_pdf
from worker.io.pdfcheck import check_pdf


def pdf_of(*objects: bytes, xref_size: int | None = None) -> bytes:
    """A PDF of these objects (1 is the root) with a correct xref, or one claiming ``xref_size``."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (xref_size or len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# Found by fuzzing; each escaped the check, and the record was downloaded again for ever.
# pypdf: "property 'indirect_reference' of 'IndirectObject' object has no setter"
SELF_REFERENCE = pdf_of(b"<</Type/Catalog/Pages 2 0 R>>", b"2 0 R")
# pypdf: "Declared size 99999999 exceeds allowed limit"
HUGE_XREF = pdf_of(
    b"<</Type/Catalog/Pages 2 0 R>>", b"<</Type/Pages/Kids[]/Count 0>>", xref_size=99999999
)


@pytest.mark.parametrize(
    ("data", "raised"),
    [(SELF_REFERENCE, "AttributeError"), (HUGE_XREF, "LimitReachedError")],
    ids=["self-reference", "huge-xref"],
)
def test_a_pdf_pypdf_cannot_read_is_reported_not_raised(data: bytes, raised: str) -> None:
    stream = io.BytesIO(data)
    stream.seek(5)
    checked = check_pdf(stream)
    assert (checked.ok, checked.pages) == (False, None)
    assert checked.problem.startswith(f"the PDF cannot be parsed: {raised}")
    assert stream.tell() == 0  # ready for the quarantine upload


def test_a_readable_pdf_has_its_pages_counted() -> None:
    checked = check_pdf(io.BytesIO(make_pdf(3)))
    assert (checked.ok, checked.pages, checked.problem) == (True, 3, "")


def test_an_html_page_is_not_a_pdf() -> None:
    checked = check_pdf(io.BytesIO(b"<html><body>Session expired</body></html>"))
    assert not checked.ok and "an HTML page" in checked.problem
