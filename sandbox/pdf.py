"""Small valid PDFs for the sandbox's received faxes and for tests."""

from __future__ import annotations

import re


def make_pdf(pages: int = 1, size: int = 0, label: str = "faxrelay sandbox") -> bytes:
    """A valid PDF of ``pages`` pages, padded with a comment stream to at least ``size`` bytes."""
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    for i in range(pages):
        content = f"BT /F1 24 Tf 72 700 Td ({label} page {i + 1}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    padding = max(0, size - len(out) - 200)
    if padding:
        # A stream object nothing refers to: ignored by readers, keeps the file valid.
        number = len(objects) + 1
        offsets.append(len(out))
        out += b"%d 0 obj\n<< /Length %d >>\nstream\n" % (number, padding)
        out += b"0" * padding + b"\nendstream\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(offsets) + 1,
        xref,
    )
    return bytes(out)


_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def count_pages(pdf: bytes) -> int:
    """The pages of a PDF, as a provider would count them before sending it (at least 1): its
    ``/Type /Page`` objects. Enough for the PDFs faxrelay's tests and benchmarks send."""
    return max(1, len(_PAGE.findall(pdf)))
