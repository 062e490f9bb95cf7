"""The dashboard's first-page previews: a fax's first page as a grey PNG, rendered with pdfium
from the archived PDF, and a small in-memory cache of the latest ones.

The PNG is written here (zlib and ``struct``) rather than through an imaging library: a preview
is one 8-bit grey image, and pdfium already gives the pixels.
"""

from __future__ import annotations

import io
import struct
import tempfile
import threading
import zlib
from collections import OrderedDict

from worker.io.archive import Archive

PREVIEW_DPI = 100
CACHED = 64  # previews kept (about 30-100 KB each): an operator paging through recent faxes


class Previews:
    """First-page PNGs of archived PDFs, the latest ``CACHED`` kept in memory. Thread-safe: the
    dashboard renders in worker threads."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, key: str, sha256: str) -> bytes | None:
        with self._lock:
            return self._cache.get(f"{key}:{sha256}")

    def render(self, key: str, sha256: str) -> bytes:
        """Render the first page of the PDF at ``key`` (blocking: S3 and pdfium) and keep it.
        Raises what pdfium raises for a PDF it cannot read."""
        png = render_first_page(self.archive, key)
        with self._lock:
            self._cache[f"{key}:{sha256}"] = png
            while len(self._cache) > CACHED:
                self._cache.popitem(last=False)
        return png


def render_first_page(archive: Archive, key: str) -> bytes:
    import pypdfium2  # loaded at the first preview, not when the web app starts

    with tempfile.NamedTemporaryFile(prefix="faxrelay-preview-", suffix=".pdf") as spool:
        archive.download_to(key, spool)
        spool.flush()
        document = pypdfium2.PdfDocument(spool.name)
        try:
            page = document[0]
            bitmap = page.render(scale=PREVIEW_DPI / 72, grayscale=True)
            width, height, stride = bitmap.width, bitmap.height, bitmap.stride
            data = bytes(bitmap.buffer)
            channels = bitmap.n_channels
            bitmap.close()
            page.close()
        finally:
            document.close()
    return png_bytes(data, width, height, stride, channels)


def png_bytes(data: bytes, width: int, height: int, stride: int, channels: int) -> bytes:
    """A PNG of a pdfium bitmap: 8-bit grey (1 channel) or BGR(A) (3, 4 channels)."""
    rows = io.BytesIO()
    for y in range(height):
        row = data[y * stride : y * stride + width * channels]
        if channels >= 3:  # pdfium's BGR(A) → RGB
            pixels = bytearray(width * 3)
            pixels[0::3] = row[2::channels]
            pixels[1::3] = row[1::channels]
            pixels[2::3] = row[0::channels]
            row = bytes(pixels)
        rows.write(b"\x00" + row)
    color_type = 0 if channels == 1 else 2

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.getvalue(), 6))
        + chunk(b"IEND", b"")
    )
